"""The W&B logger of a run: mode (auto, online, offline, disabled), server probe, directory checks, run id and group.

W&B never stops the science: under ``wandb.mode=auto`` the run logs online only when credentials are
present *and* the server answers and accepts them (a probe of at most ~12 s); otherwise it logs offline,
with one warning line saying how to ``wandb sync`` later. Online asked for by name that cannot work, and a
W&B directory that cannot be written, are bad input (ConfigError, exit 2) before training.
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from lightning_grok.config import ConfigError

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT = 10.0  # seconds for the server to answer; with DNS and the thread join, a probe ends within ~12 s
PROBE_QUERY = b'{"query": "{ viewer { id } }"}'


def wandb_base_url() -> str:
    """The W&B server: WANDB_BASE_URL, else W&B's public cloud (no trailing slash)."""
    return (os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def wandb_api_key() -> str | None:
    """The API key wandb itself would use: WANDB_API_KEY, else the netrc entry (NETRC or ~/.netrc) of the host."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or os.path.expanduser("~/.netrc"))
    except (OSError, netrc.NetrcParseError):
        return None
    creds = rc.authenticators(urlsplit(wandb_base_url()).netloc)
    return creds[2] if creds and creds[2] else None


def wandb_logged_in() -> bool:
    """True when wandb would find credentials: an API key (environment or netrc) or an identity token file."""
    return wandb_api_key() is not None or bool(os.environ.get("WANDB_IDENTITY_TOKEN_FILE"))


def wandb_mode(cfg: DictConfig) -> str:
    """online | offline | disabled. WANDB_MODE in the environment wins over wandb.mode=auto."""
    mode = cfg.wandb.mode
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if wandb_logged_in() else "offline"


def _online_requested(cfg: DictConfig) -> str | None:
    """Who asked for online by name (``wandb.mode=online``, or WANDB_MODE=online under auto); None if inferred."""
    if cfg.wandb.mode == "online":
        return "wandb.mode=online"
    if cfg.wandb.mode == "auto" and os.environ.get("WANDB_MODE") == "online":
        return "wandb.mode=auto with WANDB_MODE=online"
    return None


def probe_server(base_url: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Ask the server who we are (GraphQL ``{ viewer { id } }``). None when it accepts the key, else why not.

    The reason starts with "unreachable" (no connection, timeout, a server error) or "rejected" (HTTP 401/403,
    or no viewer for the key). Without an API key (identity-token login) only reachability is judged. Plain
    stdlib HTTP in a daemon thread: a hung DNS lookup or connect cannot hold the run past ``timeout`` + 2 s.
    """
    answer: list[str | None] = []

    def ask() -> None:
        request = urllib.request.Request(
            f"{base_url}/graphql",
            data=PROBE_QUERY,
            headers={"Content-Type": "application/json", "User-Agent": "lightning-grok"},
            method="POST",
        )
        if api_key:
            token = base64.b64encode(f"api:{api_key}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                answer.append(f"rejected the API key (HTTP {exc.code})")
            else:
                answer.append(f"unreachable (HTTP {exc.code} {exc.reason})")
            return
        except (OSError, ValueError) as exc:  # URLError, timeouts and resets are OSErrors; ValueError: not JSON
            why = getattr(exc, "reason", None) or exc
            answer.append(f"unreachable ({why})")
            return
        viewer = ((body or {}).get("data") or {}).get("viewer") if isinstance(body, dict) else None
        if api_key and not viewer:
            answer.append("rejected the API key (no user for it)")
        else:
            answer.append(None)

    thread = threading.Thread(target=ask, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if thread.is_alive() or not answer:
        return f"unreachable (no answer within {timeout:.0f} s)"
    return answer[0]


def wandb_save_dir(output_dir: Path) -> Path:
    """Where the W&B files go (``<dir>/wandb/``): WANDB_DIR when set, else the run's output_dir."""
    return Path(os.environ.get("WANDB_DIR") or output_dir)


def check_wandb_dir(save_dir: Path) -> None:
    """Prove ``<save_dir>/wandb`` can be created and written; ConfigError otherwise.

    wandb itself would quietly log to a temporary directory instead, losing the run at the next reboot.
    """
    target = save_dir / "wandb"
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"the W&B directory {target} cannot be written ({exc.strerror or exc}); set WANDB_DIR to a writable "
            "directory, or wandb.mode=disabled to run without W&B"
        ) from None


def _offline_warning(url: str, why: str, save_dir: Path) -> str:
    where = save_dir / "wandb"
    return (
        f"lightning-grok: warning: W&B server {url} {why}; logging offline to {where} "
        f"- sync later with `wandb sync {where}/offline-run-*`"
    )


def resolve_mode(cfg: DictConfig, save_dir: Path, *, check: bool = True) -> str:
    """wandb_mode, checked before any training: online only when the server answers and accepts the key.

    In order: online asked for by name without credentials -> ConfigError; ``<save_dir>/wandb`` not
    writable -> ConfigError; online -> probe the server. On an unreachable server or a rejected key,
    auto falls back to offline with one warning line on stderr (how to sync later), while online asked
    for by name is a ConfigError. ``check=False`` skips the directory and the probe (DDP ranks other
    than 0, which never log).
    """
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return mode
    url = wandb_base_url()
    if mode == "online" and not wandb_logged_in():  # auto without credentials is offline: online was asked for
        netrc_path = os.environ.get("NETRC") or "~/.netrc"
        raise ConfigError(
            f"{_online_requested(cfg)} but there are no W&B credentials (neither WANDB_API_KEY nor a "
            f"'{urlsplit(url).netloc}' entry in {netrc_path}): run `wandb login`, or set wandb.mode=offline "
            "(sync later with `wandb sync`) or wandb.mode=auto"
        )
    if not check:
        return mode
    check_wandb_dir(save_dir)
    if mode != "online":
        return mode
    why = probe_server(url, wandb_api_key())
    if why is None:
        return mode
    requested = _online_requested(cfg)
    if requested:
        raise ConfigError(
            f"{requested} but the W&B server {url} {why}: check the network, WANDB_BASE_URL and the API key "
            "(`wandb login --relogin`), or set wandb.mode=offline (sync later with `wandb sync`) or wandb.mode=auto"
        )
    print(_offline_warning(url, why, save_dir), file=sys.stderr, flush=True)
    return "offline"


def stable_run_id(cfg: DictConfig, output_dir: Path) -> str:
    """The W&B run id: wandb.run_id, else one kept in the run directory so a requeued job resumes it."""
    if cfg.wandb.run_id:
        return cfg.wandb.run_id
    path = output_dir / "wandb_run_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:  # under DDP only rank 0 logs to W&B; other ranks must not race for the file
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def run_group(cfg: DictConfig) -> str | None:
    """The W&B group of a run: ``wandb.group``; else, under ``wandb agent`` (online sweeps, which set
    WANDB_SWEEP_ID), ``sweep-<sweep id>``; else None (wandb then reads WANDB_RUN_GROUP). The offline agent
    (``lightning-grok sweep``) passes ``wandb.group=<sweep name>`` itself."""
    if cfg.wandb.group:
        return cfg.wandb.group
    sweep_id = os.environ.get("WANDB_SWEEP_ID")
    return f"sweep-{sweep_id}" if sweep_id else None


# short names of the keys a run name shows (the paper's symbols); any other key shows its last component
NAME_ABBREVIATIONS = {
    "optim.weight_decay": "wd",
    "optim.lr": "lr",
    "model.width": "m",
    "model.init_scale": "nu2",
    "data.n_train": "n",
    "data.input_dim": "d",
    "data.teacher_norm": "tn",
    "data.label_noise_std": "noise",
    "data.train_fraction": "frac",
    "data.modulus": "p",
}
# not science, or shown anyway (the seed); phases.log_points was wandb.log_points, skipped before its rename too
NAME_SKIPS = ("output_dir", "seed", "seeds", "wandb.", "trainer.", "phases.log_points")


def _short_value(value: object) -> str:
    """1e-4 -> "1e-4", 0.5 -> "0.5", 1000 -> "1000", "relu" -> "relu": run names stay short and readable."""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.4g}"
    return str(value).replace("/", "_").replace(" ", "")


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """A readable W&B run name: the model family, each key set by ``overrides`` (``key=value``, as the CLI and
    the sweep agents pass them; short names from NAME_ABBREVIATIONS) and the seed, e.g. ``ridge-wd1e-4-s3``;
    a run of K seeds ends ``s0x16``. The run directory keeps its unique name."""
    from omegaconf import OmegaConf

    parts = [str(cfg.model.family)]
    keys = dict.fromkeys(o.split("=", 1)[0].lstrip("-").strip() for o in overrides if "=" in o)
    for key in keys:
        if key.startswith(NAME_SKIPS) or key == "model.family":
            continue
        value = OmegaConf.select(cfg, key, default=None)
        parts.append(NAME_ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1]) + _short_value(value))
    parts.append(f"s{cfg.seed}" + (f"x{cfg.seeds}" if cfg.seeds > 1 else ""))
    return "-".join(parts)


def figure_tags(group: str | None) -> list[str]:
    """[figure, panel sweep, "quick" | "full"] when the W&B group names a panel of a paper figure (the
    offline agent groups a sweep's runs by its name: ``fig2_weight_decay``, ``fig2_weight_decay-quick``)."""
    if not group:
        return []
    from lightning_grok.reproduce.figures import FIGURES, QUICK_SUFFIX  # the registry only: no torch

    stem = group.removesuffix(QUICK_SUFFIX)
    for figure in FIGURES.values():
        if any(Path(panel.sweep).stem == stem for panel in figure.panels):
            return [figure.name, stem, "quick" if group.endswith(QUICK_SUFFIX) else "full"]
    return []


def run_tags(cfg: DictConfig) -> list[str]:
    """The W&B tags a team filters on: model family, data kind, ``ensemble`` for seeds > 1, the figure, panel
    and scale of a paper figure's runs (``figure_tags``), then wandb.tags."""
    tags = [str(cfg.model.family), str(cfg.data.kind)] + (["ensemble"] if cfg.seeds > 1 else [])
    tags += figure_tags(run_group(cfg))
    return list(dict.fromkeys([*tags, *map(str, cfg.wandb.tags)]))


def make_logger(cfg: DictConfig, output_dir: Path, config: dict):
    """A WandbLogger (resume='allow' under a stable id, job type ``fit``, group ``run_group``), or None when
    wandb.mode resolves to disabled.

    Call it before building anything expensive: it raises ConfigError (CLI exit 2) when the W&B directory
    cannot be written or online logging was asked for by name and cannot work, and it may take up to
    ~12 s to find an unreachable server (then, under wandb.mode=auto, it logs offline; see resolve_mode).
    Files go to ``<WANDB_DIR or output_dir>/wandb``. Only rank 0 checks: other DDP ranks never log.
    """
    save_dir = wandb_save_dir(output_dir)
    mode = resolve_mode(cfg, save_dir, check=rank_zero_only.rank == 0)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    w = cfg.wandb
    import wandb

    # wandb's banner, and its warning about the `anonymous` argument Lightning always passes: the line below
    # says where the run goes. WANDB_SILENT=false brings them back.
    if os.environ.get("WANDB_SILENT", "true").lower() in ("1", "true"):
        wandb.setup(settings=wandb.Settings(silent=True, mode=mode))
    if rank_zero_only.rank == 0:
        where = f"{save_dir}/wandb" + (" (offline: sync later with `wandb sync` on it)" if mode == "offline" else "")
        print(f"lightning-grok: W&B {mode} run {w.project}/{stable_run_id(cfg, output_dir)}, files in {where}")
    return WandbLogger(
        project=w.project,
        entity=w.entity,
        group=run_group(cfg),
        job_type="fit",
        name=w.name or output_dir.name,
        tags=run_tags(cfg),
        notes=w.notes,
        id=stable_run_id(cfg, output_dir),
        resume="allow",
        save_dir=str(save_dir),
        offline=mode == "offline",
        mode=mode,
        config=config,
        log_model=False,
    )
