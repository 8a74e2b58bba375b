"""Python client of stockraft, the Raft-replicated inventory reservation server.

    import stockraft
    with stockraft.Client("127.0.0.1:50051") as client:
        answer = client.reserve("ORDER-1", [("SKU-1", "store-7", 2)])
        if answer.outcome == stockraft.pb.OUTCOME_RESERVED: ...

`stockraft.aio.AsyncClient` is the asyncio client, multiplexed over
`Stream`. README.md (clients/) tells the rest.
"""

from . import errors
from .aio import AsyncClient
from .client import Client
from .errors import FieldViolation, Reason, StockraftError
from .pb import cluster_pb, pb

__all__ = ["AsyncClient", "Client", "FieldViolation", "Reason", "StockraftError", "cluster_pb", "errors", "pb"]
