"""Idle OpenMP threads spinning or asleep: CTranslate2 decoding and a torch training step,
alone and beside busy processes, each under both wait policies in the same run.

`models.threads` makes every evoinstruct process start with `OMP_WAIT_POLICY=PASSIVE`
unless the user set it; this bench is the measurement behind that default. Each figure is
a fresh child process (the policy is read when an OpenMP library loads) with the variable
unset — GNU OpenMP's own default, which spins before it sleeps — or set to PASSIVE, while
--busy processes of pure Python spin on the CPU beside it (0: the machine as it is).

  ct2    SmolLM2-135M-Instruct through CTranslate2 float32, --threads intra threads,
         8 prompts, greedy, --tokens new tokens: tokens per second;
  torch  an MLP of SmolLM2's width (576 -> 1536 -> 576), batch 8 x 64, AdamW, --threads
         torch threads, for --seconds: steps per second.

Medians over the runs of --repeats that finished within --limit (the rest are counted and
shown, never averaged in), the policies alternating so that whatever else runs weighs on both.

    .venv/bin/python bench/thread_wait.py [--busy 0,1,2] [--threads 2] [--repeats 3] [--limit 120]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = {"spinning (unset)": None, "PASSIVE": "PASSIVE"}

CT2_CHILD = """
import sys, time, ctranslate2
from transformers import AutoTokenizer
folder, tokenizer, threads, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(tokenizer)
gen = ctranslate2.Generator(folder, device="cpu", compute_type="float32", intra_threads=threads)
rows = [tok.convert_ids_to_tokens(tok(f"Write a short note about the number {i}.")["input_ids"])
        for i in range(8)]
start = time.monotonic()
out = gen.generate_batch(rows, max_length=tokens, sampling_topk=1, include_prompt_in_result=False)
seconds = time.monotonic() - start
print(sum(len(r.sequences_ids[0]) for r in out) / seconds)
"""

TORCH_CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1])); limit = float(sys.argv[2])
model = torch.nn.Sequential(torch.nn.Linear(576, 1536), torch.nn.SiLU(), torch.nn.Linear(1536, 576))
x = torch.randn(8, 64, 576); opt = torch.optim.AdamW(model.parameters())
start = time.monotonic(); steps = 0
while time.monotonic() - start < limit:
    model(x).pow(2).mean().backward(); opt.step(); opt.zero_grad(); steps += 1
print(steps / (time.monotonic() - start))
"""


def child(code: str, args: list[str], policy: str | None, limit_s: float) -> float:
    """The child's figure; 0.0 when it did not finish within `limit_s` (printed as such)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        return 0.0
    return float(done.stdout.strip().splitlines()[-1])


def finished_median(runs: list[float]) -> float | None:
    """The median of the runs that finished (an unfinished one is 0.0, never counted)."""
    finished = [v for v in runs if v]
    return statistics.median(finished) if finished else None


def shown(runs: list[float], limit_s: float) -> str:
    median = finished_median(runs)
    stalled = sum(1 for v in runs if not v)
    text = "-" if median is None else f"{median:.1f}"
    return text + (f" ({stalled} of {len(runs)} unfinished in {limit_s:g} s)" if stalled else "")


def busy(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", default="0,1,2", help="busy processes beside, per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--limit", type=float, default=120.0, help="seconds a child may take (spinning can stall)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "thread_wait.json")
    args = parser.parse_args()
    from evoinstruct.models.ct2_engine import conversion_key, convert
    from evoinstruct.models.smollm2 import fetch_smollm2

    base = fetch_smollm2(dtype="float32", progress=print)
    cache = Path.home() / ".cache" / "evoinstruct" / "models" / "ctranslate2"
    folder = convert(base, None, cache / conversion_key(base, None, "float32"), "float32")
    workloads = {
        "ct2 tokens/s": (CT2_CHILD, [str(folder), str(base), str(args.threads), str(args.tokens)]),
        "torch steps/s": (TORCH_CHILD, [str(args.threads), str(args.seconds)]),
    }
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for n in (int(b) for b in args.busy.split(",")):
        hogs = busy(n)
        try:
            for name, (code, child_args) in workloads.items():
                runs: dict[str, list[float]] = {p: [] for p in POLICIES}
                for _ in range(args.repeats):
                    for label, policy in POLICIES.items():
                        runs[label].append(child(code, child_args, policy, args.limit))
                results.setdefault(f"beside {n} busy", {})[name] = runs  # 0.0: unfinished
                passive = finished_median(runs["PASSIVE"])
                spinning = finished_median(runs["spinning (unset)"])
                ratio = passive / spinning if passive and spinning else None
                print(
                    f"beside {n} busy, {name}: "
                    + ", ".join(f"{k} {shown(v, args.limit)}" for k, v in runs.items())
                    + f"  (PASSIVE / spinning: {'-' if ratio is None else f'{ratio:.2f}'})",
                    flush=True,
                )
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
