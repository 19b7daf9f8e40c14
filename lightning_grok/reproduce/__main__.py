"""The agents' child interpreter: ``python -m lightning_grok.reproduce --agent JSON`` (see ``sweeps.run_agents``)."""

import os
import sys

from lightning_grok.reproduce.sweeps import _agent_main

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--agent":
        os.environ.setdefault("WANDB_SILENT", "true")
        raise SystemExit(_agent_main(sys.argv[1:]))
    raise SystemExit("usage: lightning-grok reproduce FIGURE (this module's own entry point is for its agents)")
