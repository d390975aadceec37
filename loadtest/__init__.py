"""Locust load tests with SLO gates for the facestack gateway (docs/loadtest.md).

    python -m loadtest.run       # seed a gallery, run Locust headless, report, gate on p99 and error rate
    python -m loadtest.capacity  # the highest steady RPS per endpoint at which the SLOs hold
    python -m loadtest.seed      # only seed a gallery of N subjects

Only locustfile.py imports Locust (gevent monkey-patches on import): the runner, the capacity search and the
tests start Locust as a subprocess.
"""
