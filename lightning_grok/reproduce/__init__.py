"""Every figure of the paper with one command: run its sweep files through the offline agent, then draw.

  lightning-grok reproduce FIGURE [FIGURE ...|all] [--quick] [--seeds K] [--agents N] [--no-batch] [--out DIR]
                           [--from DIR] [--partial] [key=value ...]

FIGURE is fig1 ... fig7, modular or modular_transformer (``FIGURES``). Each figure is a list of panels; each
panel is a W&B sweep file under ``sweeps/`` (the paper's setting at full scale). ``reproduce`` writes, per panel,
a sweep file with ``--quick`` (laptop size), ``--seeds`` and the ``key=value`` overrides applied, and runs it with
the offline agent (``lightning_grok.sweep``) into ``<out>/<figure>/<sweep>[-quick][-<hash>]/``:

* seeds per point: ``seeds=K`` (one run, K seeds as batched tensors) where the family supports vectorized
  seeds, else a ``seed`` list of K separate runs;
* finished points are never rerun, so running the same command again resumes an interrupted reproduction
  (interrupted runs resume from their checkpoints) and only draws once everything is there: a figure whose
  sweep lacks points is not drawn (exit 4; ``--partial`` draws what there is);
* SIGINT / SIGTERM are passed on to the agents, which stop their runs at a checkpoint and record them
  ``killed``; ``reproduce`` waits for them, draws nothing and exits 130 / 143;
* ``--agents N`` starts N agents on the same sweep directories (they split the points);
* points of a panel that differ only in per-member scalars (lambda, eta, nu^2, label noise, teacher norm, seed;
  ridge and random features) train as one batched GD loop in one agent, each with its own run directory,
  ``phases.json`` and W&B run, equal to the point run alone (``lightning_grok.batch``); ``--no-batch`` runs
  every point alone;
* ``--from DIR`` runs nothing: it draws from run directories made elsewhere (a SLURM array of
  ``lightning-grok sweep SWEEP --sweep-dir DIR/<sweep>``, or an earlier ``--out``).

Outputs: ``<out>/<figure>.png`` and ``.pdf``, ``<out>/<figure>.json`` (every plotted number: per point the
seeds' t1 and t2 in GD steps, the exact-dynamics times, the bounds and their verdicts; the scaling-law fits;
the wall time; the bounds judged per seed and the captions judged by the times) and
``<out>/<figure>_fits.md``. Unless W&B is disabled (``wandb.mode=disabled``), the PNG goes to a W&B run of job
type ``reproduce``.

Scaling laws (``scaling.fit_law``; predictions from Eqs. (6)-(8), Thm 4.2 and Remark A.14): log t2 against
log lambda has slope -1 (t2 ~ 1/lambda); log t1 against log lambda slope 0 (lambda <= 1e-4); t1 and t2 are
linear in ln nu^2, with the t2 slope the larger. A law is consistent only when the fit's 95% interval contains
the prediction. Bounds (``scaling.check_bound``; ``Figure.bounds``) are judged per seed, with their tightness
measured / bound: Eq. (6) bounds t1 from above and is not a slope-1 law in n / lambda+_min(Phi^T Phi).
Captions (``scaling.check_claim``; ``Figure.claims``) are judged by the seeds' times.

The agents run in a child interpreter (``python -m lightning_grok.reproduce --agent``): they fork one
process per point, which is safe only in a process that has not started torch's thread pools.

Modules: ``figures`` (the registry: ``FIGURES``, ``Panel``, ``FitSpec``, ``BoundSpec``, ``ClaimSpec``),
``sweeps`` (a panel's sweep file, the jobs and the agents), ``collect`` (reading runs back, per-point
statistics, mean curves; no Lightning), ``report`` (fits, bounds, captions, drawing, JSON, W&B, summary) and
``run`` (``reproduce``, the entry point); every public name is re-exported here.
"""

from lightning_grok.reproduce.collect import (
    Run,
    bound_verdicts,
    combine_curves,
    exact_overlay,
    find_panel_dir,
    point_stats,
    read_runs,
)
from lightning_grok.reproduce.figures import (
    FIGURES,
    LAMBDA,
    M_SYM,
    MODULAR_KEYS,
    N_SYM,
    NOISE_KEYS,
    NU2,
    SETTING_KEYS,
    TRANSFORMER_KEYS,
    Figure,
    FitSpec,
    Panel,
)
from lightning_grok.reproduce.report import (
    compute_bounds,
    compute_claims,
    compute_fits,
    draw_figure,
    fits_markdown,
    log_to_wandb,
    setting_text,
)
from lightning_grok.reproduce.run import EXIT_INCOMPLETE, Stopped, reproduce
from lightning_grok.reproduce.sweeps import (
    CONFIGS,
    REPO,
    SWEEPS,
    Job,
    StopSignals,
    check_overrides,
    finished_points,
    grid_size,
    panel_dirname,
    panel_sweep,
    prepare_jobs,
    run_agents,
)

__all__ = [
    "CONFIGS",
    "EXIT_INCOMPLETE",
    "FIGURES",
    "LAMBDA",
    "M_SYM",
    "MODULAR_KEYS",
    "N_SYM",
    "NOISE_KEYS",
    "NU2",
    "REPO",
    "SETTING_KEYS",
    "SWEEPS",
    "TRANSFORMER_KEYS",
    "Figure",
    "FitSpec",
    "Job",
    "Panel",
    "Run",
    "StopSignals",
    "Stopped",
    "bound_verdicts",
    "check_overrides",
    "combine_curves",
    "compute_bounds",
    "compute_claims",
    "compute_fits",
    "draw_figure",
    "exact_overlay",
    "find_panel_dir",
    "finished_points",
    "fits_markdown",
    "grid_size",
    "log_to_wandb",
    "panel_dirname",
    "panel_sweep",
    "point_stats",
    "prepare_jobs",
    "read_runs",
    "reproduce",
    "run_agents",
    "setting_text",
]
