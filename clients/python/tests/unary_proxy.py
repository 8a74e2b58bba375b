"""A gRPC proxy that forwards Inventory's unary calls and nothing else.

It stands for a server (or a gateway in front of one) that does not carry
`Stream`: calls to it get UNIMPLEMENTED there, which is what the client's
fall-back to unary calls is for. Statuses pass through with their trailers,
so typed errors keep their details.
"""

from __future__ import annotations

import grpc

from stockraft import operations


class UnaryOnlyProxy:
    def __init__(self, target: str):
        self.target = target
        self.forwarded = 0
        # Requests seen, as bytes, in order (retries included).
        self.seen: list[bytes] = []
        # Statuses to answer instead of forwarding, one per request, first
        # in first out: (code, grpc-retry-pushback-ms or None).
        self.faults: list[tuple[grpc.StatusCode, str | None]] = []

    async def start(self) -> str:
        self._upstream = grpc.aio.insecure_channel(self.target)
        handlers = {
            op.method: grpc.unary_unary_rpc_method_handler(self._forwarder(op.method))
            for op in operations.ALL
        }
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("stockraft.v1.Inventory", handlers),))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"127.0.0.1:{port}"

    def _forwarder(self, method: str):
        # No serializers on either side: requests and answers pass as bytes.
        upstream = self._upstream.unary_unary(f"/stockraft.v1.Inventory/{method}")

        async def forward(request: bytes, context):
            self.seen.append(request)
            if self.faults:
                code, pushback = self.faults.pop(0)
                if pushback is not None:
                    context.set_trailing_metadata((("grpc-retry-pushback-ms", pushback),))
                await context.abort(code, "a fault injected by the test proxy")
            self.forwarded += 1
            try:
                return await upstream(request, timeout=context.time_remaining(),
                                      metadata=context.invocation_metadata())
            except grpc.aio.AioRpcError as error:
                context.set_trailing_metadata(tuple(error.trailing_metadata() or ()))
                await context.abort(error.code(), error.details())

        return forward

    async def stop(self) -> None:
        await self._server.stop(None)
        await self._upstream.close()
