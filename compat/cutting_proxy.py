"""A TCP proxy on loopback that can cut every connection through it at once (a reset on
both sides), so that requests already delivered to the broker lose their responses and
clients must retry them, block a link until healed, or pause it (hold every byte, both
ways, until resumed: a slow link). Tests point the broker's advertised address, or a
node's address of a peer, at the proxy."""

import select
import socket
import struct
import threading
import time


class CuttingProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []
        self.cuts = 0
        self.closed = False
        self.blocked = False
        self.paused = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                # A blocked link: the connection is reset at once, as a dropped route would
                # fail it (sooner, so tests stay short).
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, self.paused), daemon=True).start()

    @staticmethod
    def _pump(a, b, paused):
        socks = [a, b]
        try:
            while True:
                if paused.is_set():
                    time.sleep(0.005)
                    continue
                ready, _, _ = select.select(socks, [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        """Resets every open connection (SO_LINGER 0 makes close() send RST)."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.cuts += 1
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def block(self):
        """Cuts every connection and refuses new ones until `heal`."""
        self.blocked = True
        self.cut()

    def heal(self):
        self.blocked = False

    def pause(self):
        """Holds every byte through the proxy, both ways, until `resume`."""
        self.paused.set()

    def resume(self):
        self.paused.clear()

    def close(self):
        self.closed = True
        self.listener.close()
        self.cut()
