"""`python -m gateway`: serve the API with uvicorn on $FACESTACK_GATEWAY_HOST:$PORT (the container entry point).

The same app as `python -m uvicorn gateway.app:app --host 0.0.0.0 --port 8000`, with the listening
address, log level and graceful-shutdown budget (FACESTACK_GATEWAY_SHUTDOWN_TIMEOUT_S: time in-flight
requests get after SIGTERM) taken from the settings.
"""

from __future__ import annotations

import uvicorn

from facestack.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run("gateway.app:app", host=settings.gateway_host, port=settings.port,
                log_level=settings.log_level.lower(), access_log=False,
                timeout_graceful_shutdown=int(settings.gateway_shutdown_timeout_s))


if __name__ == "__main__":
    main()
