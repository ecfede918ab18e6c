"""The demo's scenario: the two versions' behaviour, the two rollouts, the options, and the
policies (the repository's demo policies with run-time addresses put in, or their simulated
equivalents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzer.core.rollout import Phase
from analyzer.policy import Policy, load_policy

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"

# --------------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class VersionProfile:
    """How one version of the sample service behaves (the app's flags, the simulator's figures)."""

    error_rate: float
    latency_median: float  # seconds
    latency_p99: float  # seconds


#: v1 and the healthy v2: 3 % errors (see the policy comments for why so many), 20 ms median,
#: 150 ms p99. The regressed v3: 4x the errors and a 3x slower tail.
STABLE = VersionProfile(error_rate=0.03, latency_median=0.020, latency_p99=0.150)
HEALTHY = STABLE
REGRESSED = VersionProfile(error_rate=0.12, latency_median=0.020, latency_p99=0.450)


@dataclass(frozen=True)
class DemoRollout:
    """One rollout of the demo: its policy file, how its two versions behave, what must happen."""

    policy_file: str
    stable: VersionProfile
    canary: VersionProfile
    expected: Phase


ROLLOUTS: tuple[DemoRollout, ...] = (
    DemoRollout("demo-healthy.yaml", STABLE, HEALTHY, Phase.SUCCEEDED),
    DemoRollout("demo-regressed.yaml", STABLE, REGRESSED, Phase.ROLLED_BACK),
)

#: `--short` (CI): fewer steps, a shorter soak per step and a shorter stable-only warm-up.
SHORT_STEPS = [25, 50, 100]
SHORT_MIN_STEP = "8s"
SHORT_BASELINE = "6s"


@dataclass(frozen=True)
class DemoOptions:
    """What `canary demo` was asked for."""

    short: bool = False
    out_dir: Path = Path("out")
    fallback_simulate: bool = False
    policies_dir: Path = REPO_POLICIES
    rps: float = 250.0  # per service, through its nginx
    time_limit: float | None = None  # seconds for the rollouts; default by mode
    speed: float = 8.0  # simulated mode: simulated seconds per real second (0: no sleeping)
    live: bool | None = None  # rich Live; default: when the console is a terminal

    @property
    def limit(self) -> float:
        if self.time_limit is not None:
            return self.time_limit
        return 100.0 if self.short else 260.0


# --------------------------------------------------------------------------- policies


def load_demo_policies(opts: DemoOptions) -> list[Policy]:
    """The demo policies as written (validated), shortened for `--short`."""
    out = []
    for r in ROLLOUTS:
        policy = load_policy(opts.policies_dir / r.policy_file)
        if opts.short:
            policy = _update(policy, ("spec", "strategy", "steps"), SHORT_STEPS)
            policy = _update(policy, ("spec", "analysis", "minStepDuration"), SHORT_MIN_STEP)
            policy = _update(policy, ("spec", "analysis", "baselineWindow"), SHORT_BASELINE)
        out.append(policy)
    return out


def _update(policy: Policy, path: Sequence[str], value: Any) -> Policy:
    """A copy of `policy` with one field replaced, validated again (pydantic model_copy does
    not validate; dumping and validating keeps every rule of the policy model)."""
    data = policy.model_dump(mode="json", exclude_none=True)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return Policy.model_validate(data)


def localize_policy(policy: Policy, *, upstream_file: Path, nginx_config: Path,
                    stable_server: str, canary_server: str, prometheus_url: str) -> Policy:
    """The policy pointed at this run's loopback stack (ports are only known at run time)."""
    p = _update(policy, ("spec", "router", "upstreamFile"), str(upstream_file))
    p = _update(p, ("spec", "router", "nginxConfig"), str(nginx_config))
    p = _update(p, ("spec", "router", "stableServer"), stable_server)
    p = _update(p, ("spec", "router", "canaryServer"), canary_server)
    return _update(p, ("spec", "metrics", "address"), prometheus_url)


def simulated_policy(policy: Policy, rollout: DemoRollout, rps: float, seed: int) -> Policy:
    """The same rollout on the simulate source (the sample service's figures) and dry-run."""

    def figures(v: VersionProfile) -> dict[str, Any]:
        return {"errorRate": v.error_rate, "latencyMedian": f"{v.latency_median * 1000:g}ms",
                "latencyP99": f"{v.latency_p99 * 1000:g}ms"}

    p = _update(policy, ("spec", "router"), {"provider": "dry-run"})
    return _update(p, ("spec", "metrics"), {
        "source": "simulate", "rps": rps, "seed": seed,
        "stable": figures(rollout.stable), "canary": figures(rollout.canary),
    })
