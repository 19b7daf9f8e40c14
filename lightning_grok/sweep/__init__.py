"""The offline sweep agent: W&B sweep YAML files run on W&B's own sweep engine, with no server.

``lightning-grok sweep sweeps/X.yaml`` validates the sweep (schema, method, every parameter through the
run config schema), then claims points one at a time from a sweep directory shared by any number of
agents (one machine or SLURM nodes on a shared filesystem) and runs each as an ordinary
``python -m lightning_grok fit ...`` (a W&B offline run, syncable later with ``wandb sync``).

The sweep directory::

    sweep.yaml          verbatim copy of the sweep file (a second agent must bring the same sweep)
    state.json          every run: name, parameters, state, agent host/pid, times, exit code, result
    state.lock          the file lock every read-modify-write of state.json holds
    heartbeats/<run>    the running agent's last sign of life, for agents on other hosts
    runs/<run>/         the run's output_dir: phases.json, curves.json, wandb/, agent.log

``lightning-grok sweep-table DIR`` prints one row per point: parameters, t1, t2, grokking time and the
verdict of every bound.
"""

from lightning_grok.sweep.spec import SweepSpec, SweepSpecError, load_spec

__all__ = ["SweepSpec", "SweepSpecError", "load_spec"]
