"""gRPC echo server without generated code (raw bytes messages).

Service echo.Echo:
  Say     (unary)            returns b"echo:" + request; trailing metadata x-echo-trailer=unary-done
  Stream  (server streaming)  request is a count N as ASCII; streams b"msg-0".."msg-N-1", then
                              trailing metadata x-echo-trailer=stream-done, x-echo-count=N
  Fail    (unary)            aborts with NOT_FOUND and details "no such thing"
"""

import argparse
import sys
from concurrent import futures

import grpc


def say(request, context):
    context.set_trailing_metadata((("x-echo-trailer", "unary-done"),))
    return b"echo:" + request


def stream(request, context):
    count = int(request.decode())
    context.set_trailing_metadata(
        (("x-echo-trailer", "stream-done"), ("x-echo-count", str(count)))
    )
    for i in range(count):
        yield ("msg-%d" % i).encode()


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    handler = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("0.0.0.0:%d" % args.port)
    server.start()
    sys.stderr.write("grpc listening on %d\n" % args.port)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
