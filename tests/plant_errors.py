"""Plant one error at a time in a copy of the code and check that the equation tests catch it.

    python tests/plant_errors.py            # every planted error (a few minutes on 2 cores)
    python tests/plant_errors.py 3 17       # only these (numbers as listed)

Each error is an exact text replacement in a file under platform/resulic, made in a temporary
copy of platform/ (the working tree is never touched); the tests named with it run against the
copy and must fail. Not collected by pytest (no test_ prefix): a tool for checking the tests,
with no mutation-testing dependency. docs/architecture.md lists the results.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQ = "tests/test_equations.py"

# (file under platform/resulic, original text, planted text, pytest selection)
PLANTED: list[tuple[str, str, str, list[str]]] = [
    ("diffusion/schedule.py", "noise + g * (z_c - z0)", "noise - g * (z_c - z0)", [EQ, "-k", "forward_process"]),
    ("diffusion/schedule.py", "torch.ones_like(self.r(t)) / r_N", "torch.ones_like(self.r(t)) * r_N", [EQ, "-k", "forward_process"]),
    ("diffusion/schedule.py", "return self.r(t) / r_N**2", "return self.r(t) / r_N", [EQ, "-k", "forward_process"]),
    ("diffusion/schedule.py", "zc_coef, denom = 1.0 / r_N, 1.0 - r_t / r_N", "zc_coef, denom = 1.0 / r_N, 1.0 + r_t / r_N", [EQ, "-k", "x0_prediction"]),
    ("diffusion/schedule.py", "zc_coef, denom = r_t / r_N**2, 1.0 - r_t**2 / r_N**2", "zc_coef, denom = r_t / r_N, 1.0 - r_t**2 / r_N**2", [EQ, "-k", "x0_prediction"]),
    ("diffusion/schedule.py", "iota = (1 - a_s) / (1 - a_t) * torch.sqrt(a_t / a_s)",
     "iota = torch.sqrt(torch.clamp(1 - a_s - (eta * torch.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)))**2, min=0.0)) / torch.sqrt(1 - a_t)",
     [EQ, "-k", "step_coefficients"]),  # the 0 < eta < 1 coefficient this issue fixed
    ("diffusion/schedule.py", "sigma = eta * torch.sqrt(", "sigma = torch.sqrt(", [EQ, "-k", "step_coefficients or marginal"]),
    ("diffusion/schedule.py", "torch.sqrt((1 - a_s) / (1 - a_t)), torch.zeros(())", "torch.sqrt((1 - a_t) / (1 - a_s)), torch.zeros(())", [EQ, "-k", "step_coefficients or marginal"]),
    ("diffusion/schedule.py", "return float(a.sqrt()) * z_c + float((1 - a).sqrt()) * noise", "return float((1 - a).sqrt()) * z_c + float(a.sqrt()) * noise", [EQ, "-k", "forward_process"]),
    ("diffusion/schedule.py", "grid = [(i * self.N) // S for", "grid = [-(-i * self.N // S) for", [EQ, "-k", "grid"]),
    ("config.py", 'return 1.0 if self.gamma == "time_varying" else 0.0', "return 0.0", [EQ, "-k", "eta_defaults or tiny_codec"]),
    ("codec/codec.py", "gamma_variant=rp.gamma, eta=rp.resolved_eta)", "gamma_variant=rp.gamma)", [EQ, "-k", "tiny_codec"]),
    ("codec/codec.py", "return eps_u + guidance * (eps_c - eps_u)", "return eps_c + guidance * (eps_c - eps_u)", [EQ, "-k", "guidance"]),
    ("codec/codec.py", "torch.cat([negative, positive])", "torch.cat([positive, negative])", [EQ, "-k", "guidance"]),
    ("codec/codec.py", "torch.cat([z_c, z_c])", "torch.cat([torch.zeros_like(z_c), z_c])", [EQ, "-k", "guidance"]),
    ("codec/codec.py", "self.backbone.encode_text([NEGATIVE_PROMPT])", 'self.backbone.encode_text([""])', [EQ, "-k", "guides_with_its_prompts"]),
    ("models/compressor.py", 'ANCHOR_PARITY = "odd"', 'ANCHOR_PARITY = "even"', [EQ, "-k", "anchors or checkerboard"]),
    ("models/compressor.py", "h_s=h_s, quantizer=\"ste\")", "h_s=h_s, quantizer=\"noise\")", [EQ, "-k", "quantisation"]),
    ("models/compressor.py", "math.log(0.11)", "math.log(0.1)", [EQ, "-k", "scale_table"]),
    ("train/model.py", "pixels = images.shape[0] * images.shape[-2] * images.shape[-1]", "pixels = z0.shape[0] * z0.shape[-2] * z0.shape[-1]", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "rate = sum((-torch.log2(lk))", "rate = sum((-torch.log(lk))", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "torch.randint(0, self.schedule.N + 1,", "torch.randint(0, self.schedule.N,", [EQ, "-k", "timesteps_cover"]),
    ("train/model.py", "torch.randint(0, self.schedule.N + 1,", "torch.randint(1, self.schedule.N + 1,", [EQ, "-k", "timesteps_cover"]),
    ("train/model.py", "LossDraw(n, torch.randn_like(z0))", "LossDraw(n, 2 * torch.randn_like(z0))", [EQ, "-k", "timesteps_cover"]),
    ("train/model.py", "self.lambda_rate * rate", "rate", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "self.weights.lambda_guide * terms[\"loss_guide\"]", "terms[\"loss_guide\"]", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "self.weights.lambda_mse * terms[\"loss_mse\"]", "terms[\"loss_mse\"]", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "self.weights.lambda_lpips * terms[\"loss_lpips\"]", "terms[\"loss_lpips\"]", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "F.mse_loss(eps.float(), noise.float())", "F.mse_loss(eps.float(), z_n.float())", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "x = images * 2 - 1", "x = images", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "backbone.vae.decode(x0_hat / backbone.scaling_factor)", "backbone.vae.decode(x0_hat)", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "s.predict_x0(*rows), z_n, eps, z_c, n)", "s.predict_x0(*rows), z_n, noise, z_c, n)", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "left, right, top, bottom = crop if", "top, bottom, left, right = crop if", [EQ, "-k", "every_loss_term"]),
    ("models/backbone.py", "self.vae.encode(x * 2 - 1)", "self.vae.encode(x)", [EQ, "-k", "every_loss_term"]),
    ("train/model.py", "z_n = self.per_schedule(n_r,", "z_n = self.per_schedule(None,",
     ["tests/test_variable_rate.py", "-k", "schedule_its_level"]),
    ("train/model.py", "torch.log2(bits.clamp_min(1.0)).mean()", "torch.log(bits.clamp_min(1.0)).mean()",
     ["tests/test_train_model.py", "-k", "log_rate_objective"]),
]


def run(index: int, workdir: Path) -> tuple[bool, str]:
    rel, original, planted, selection = PLANTED[index]
    copy = workdir / f"plant{index}"
    shutil.copytree(REPO / "platform", copy / "platform", ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "platform" / "resulic" / rel
    text = path.read_text()
    if text.count(original) != 1:
        return False, f"the original text occurs {text.count(original)} times in {rel}: update this list"
    path.write_text(text.replace(original, planted))
    env = {**os.environ, "PYTHONPATH": f"{copy / 'platform'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selection],
                          cwd=REPO, env=env, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    shutil.rmtree(copy)
    if proc.returncode == 1 and failed:
        return True, ", ".join(f.split("::", 1)[1] for f in failed)
    return False, f"pytest exit {proc.returncode}: " + (proc.stdout.strip().splitlines() or ["(no output)"])[-1]


def main(argv: list[str]) -> int:
    chosen = [int(a) for a in argv] or list(range(len(PLANTED)))
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in chosen:
            caught, detail = run(i, Path(tmp))
            rel, original, planted, _ = PLANTED[i]
            missed += not caught
            print(f"{i:2d} {'caught' if caught else 'MISSED'}  {rel}: {original!r} -> {planted!r}\n     {detail}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} planted errors caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
