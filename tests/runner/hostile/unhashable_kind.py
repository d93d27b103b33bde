# Sends the runner a failure whose kind is a list (a set lookup of it raises TypeError) and leaves:
# it finds the optimizer server's connection among the process's objects and writes a frame.
import gc
import json
import os
import socket
import struct

frame = json.dumps({"op": "error", "error": {"kind": ["x"]}}).encode()
for thing in gc.get_objects():
    if isinstance(thing, socket.socket) and thing.fileno() >= 0:
        thing.sendall(struct.pack("<I", len(frame)) + frame)
os._exit(0)
