"""Generated gRPC and protobuf code for stateful.v1 (make protos). Do not edit."""
