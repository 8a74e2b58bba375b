"""The generated messages of the public contract, under short names.

`stockraft.pb` is proto/stockraft/v1/inventory.proto and
`stockraft.cluster_pb` is proto/stockraft/v1/cluster.proto, so callers can
write `pb.OUTCOME_RESERVED` or `pb.Line(...)` without knowing where
generate.sh put the modules.
"""

from ._proto.stockraft.v1 import cluster_pb2 as cluster_pb
from ._proto.stockraft.v1 import cluster_pb2_grpc as cluster_grpc
from ._proto.stockraft.v1 import inventory_pb2 as pb
from ._proto.stockraft.v1 import inventory_pb2_grpc as inventory_grpc

__all__ = ["pb", "cluster_pb", "inventory_grpc", "cluster_grpc"]
