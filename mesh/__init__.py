"""mesh-messenger: a serverless peer-to-peer messenger.

The public API is `Node` (mesh.node); errors live in mesh.errors.
"""

from mesh.envelope import Message
from mesh.errors import MeshError
from mesh.node import Node, Receipt

__all__ = ["MeshError", "Message", "Node", "Receipt"]
__version__ = "0.1.0"
