'use strict';
// Part of the workload library statefulctl new-workload --lang node writes; the same module as
// services/redis-node/src/errors.js of mesos-stateful.
// Errors a callback raises, and how they become gRPC status (the project's rule, as
// services/mesos_stateful/common/grpc_errors.py): UNAVAILABLE is retried by lifecycle with backoff; any other
// status fails the plan step for good. INVALID_ARGUMENT carries a google.rpc.BadRequest with one
// field violation per bad field (in grpc-status-details-bin), as the Python services do.

const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');

class CallbackError extends Error {
  /**
   * @param {number} code a grpc.status code
   * @param {string} message what a person reads (actionable)
   * @param {Object<string,string>} [fields] field path -> what is wrong (INVALID_ARGUMENT)
   */
  constructor(code, message, fields) {
    super(message);
    this.code = code;
    this.fields = fields || {};
  }
}

const invalidArgument = (message, fields) => new CallbackError(grpc.status.INVALID_ARGUMENT, message, fields);
const failedPrecondition = (message) => new CallbackError(grpc.status.FAILED_PRECONDITION, message);
const unavailable = (message) => new CallbackError(grpc.status.UNAVAILABLE, message);

// google.rpc.Status and google.rpc.BadRequest (googleapis google/rpc/status.proto and
// error_details.proto), the few fields needed.
const rpcRoot = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } },
                },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpcRoot.lookupType('google.rpc.Status');
const BadRequest = rpcRoot.lookupType('google.rpc.BadRequest');

/** The grpc-js error object for a CallbackError (or any other error: INTERNAL). */
function toServiceError(error) {
  if (!(error instanceof CallbackError)) {
    return { code: grpc.status.INTERNAL, details: `internal error: ${error && error.message ? error.message : error}` };
  }
  const metadata = new grpc.Metadata();
  const names = Object.keys(error.fields).sort();
  if (error.code === grpc.status.INVALID_ARGUMENT && names.length) {
    const bad = BadRequest.encode(
      BadRequest.create({ field_violations: names.map((f) => ({ field: f, description: error.fields[f] })) }),
    ).finish();
    const status = Status.encode(
      Status.create({
        code: error.code,
        message: error.message,
        details: [{ type_url: 'type.googleapis.com/google.rpc.BadRequest', value: bad }],
      }),
    ).finish();
    metadata.set('grpc-status-details-bin', Buffer.from(status));
  }
  return { code: error.code, details: error.message, metadata };
}

module.exports = { CallbackError, invalidArgument, failedPrecondition, unavailable, toServiceError };
