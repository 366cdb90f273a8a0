'use strict';
// The project's protos (protos/stateful/v1), loaded at run time with @grpc/proto-loader:
// snake_case fields (keepCase), enums as names, int64 as strings (lease ids exceed 2^53),
// defaults filled in.
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function loadProtos(protosDir) {
  const definition = loader.loadSync(['stateful/v1/workload_service.proto', 'stateful/v1/state_service.proto'], {
    ...OPTIONS,
    includeDirs: [protosDir],
  });
  return grpc.loadPackageDefinition(definition).stateful.v1;
}

module.exports = { loadProtos };
