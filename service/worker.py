"""gunicorn's threaded worker, with a stricter SIGTERM drain."""
from gunicorn.workers.gthread import ThreadWorker


class DrainingWorker(ThreadWorker):
    """On SIGTERM, close the listening sockets at once.

    The stock worker only stops accepting, keeping its copy of the listener
    open until in-flight requests finish: meanwhile new connections pile up
    in the kernel backlog and hang, to be reset at exit. Closed, they are
    refused immediately and a client or load balancer retries elsewhere.
    Requests already accepted still run to completion (graceful_timeout).
    """

    def handle_exit(self, sig, frame):
        if self.alive:
            self.set_accept_enabled(False)
            for listener in self.sockets:
                listener.close()
        super().handle_exit(sig, frame)
