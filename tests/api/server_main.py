"""A real `hindsight serve` process for tests: create_app + uvicorn on a loopback port (killable with -9).

It builds the app exactly as `hindsight serve` does (service.cli_serve.api_config over the settings)
without importing the whole CLI, so a broken command group elsewhere cannot break these tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from api.app import create_app
from service.cli_serve import api_config
from service.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings(root=args.root)
    uvicorn.run(create_app(api_config(settings)), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
