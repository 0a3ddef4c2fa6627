"""gunicorn's threaded worker, with even load across workers and a stricter SIGTERM drain."""
from gunicorn.sock import TCPSocket
from gunicorn.workers.gthread import ThreadWorker


class DrainingWorker(ThreadWorker):
    """The gthread worker, changed in two ways.

    Its own listening socket: with `reuse_port`, each worker also binds the
    address with SO_REUSEPORT, and the kernel spreads new connections over
    the workers' sockets. On the shared socket alone, whichever worker wakes
    first accepts a burst of connections and keeps them (keep-alive): two
    workers then often serve a load balancer's connections on one core.

    SIGTERM closes the listening sockets at once. The stock worker only stops
    accepting, keeping its copy of the listener open until in-flight requests
    finish: meanwhile new connections pile up in the kernel backlog and hang,
    to be reset at exit. Closed, they are refused immediately and a client or
    load balancer retries elsewhere. Requests already accepted still run to
    completion (graceful_timeout).
    """

    def init_process(self):
        if self.cfg.reuse_port:
            own = [type(s)(s.sock.getsockname()[:2], self.cfg, self.log) for s in self.sockets if isinstance(s, TCPSocket)]
            self.sockets = [*self.sockets, *own]  # the shared socket still gets its share of connections
        super().init_process()

    def handle_exit(self, sig, frame):
        if self.alive:
            self.set_accept_enabled(False)
            for listener in self.sockets:
                listener.close()
        super().handle_exit(sig, frame)
