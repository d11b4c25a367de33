"""`mesh chat`: a full-screen terminal chat on the node of a home (Textual).

link.py     the running `mesh up` of a home, or one the chat starts; requests and the
            watch stream over the control socket
view.py     what is shown, as pure functions: delivery marks, times, the contact list,
            the status line, the QR code
screens.py  the dialogs: add a contact (ID checked as you type), my ID and fingerprint
app.py      ChatApp: contacts and groups, the conversation, sending
run.py      run_chat (find or start the daemon, run, stop what it started)
"""

from mesh.chat.app import ChatApp
from mesh.chat.link import DaemonLink, find_or_start
from mesh.chat.run import ChatOptions, ChatOutcome, run_chat
from mesh.errors import NodeStoppedError

__all__ = [
    "ChatApp",
    "ChatOptions",
    "ChatOutcome",
    "DaemonLink",
    "NodeStoppedError",
    "find_or_start",
    "run_chat",
]
