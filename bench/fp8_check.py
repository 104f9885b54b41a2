"""core/fp8.py on a GPU: ``Fp8Linear`` (torch._scaled_mm on FP8 tensor cores) against the same quantised
arithmetic computed in float32, at the 14B shape's layer sizes and decoding batch sizes.

    python bench/fp8_check.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from mcqtune.core.fp8 import Fp8Linear

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for rows_in, (out_features, in_features) in [(1, (5120, 5120)), (64, (13824, 5120)), (128, (5120, 13824)),
                                                 (7, (1024, 5120))]:
        weight = torch.randn(out_features, in_features, device="cuda") * 0.02
        bias = torch.randn(out_features, device="cuda", dtype=torch.bfloat16)
        layer = Fp8Linear.from_weight(weight, bias)
        x = torch.randn(rows_in, in_features, device="cuda", dtype=torch.bfloat16)
        got = layer(x).float()
        # the reference: the same e4m3 values and scales, multiplied in float32
        x_scale = (x.float().abs().amax(dim=1, keepdim=True) / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
        xq = (x.float() / x_scale).to(torch.float8_e4m3fn).float() * x_scale
        wq = layer.weight.float() * layer.scale.reshape(-1, 1)
        want = xq @ wq.t() + bias.float()
        exact = x.float() @ weight.t() + bias.float()
        rows.append({"x": list(x.shape), "weight": [out_features, in_features],
                     "max_abs_diff_vs_quantised_reference": float((got - want).abs().max()),
                     "max_abs_diff_vs_16bit": float((got - exact).abs().max()),
                     "reference_scale": float(want.abs().mean())})
        print(json.dumps(rows[-1]), flush=True)
    result = {"torch": torch.__version__, "card": torch.cuda.get_device_name(), "rows": rows}
    try:
        import inspect

        from torch.nn.attention import varlen

        result["varlen_attn_signature"] = str(inspect.signature(varlen.varlen_attn))
    except (ImportError, AttributeError) as err:
        result["varlen_attn_signature"] = f"unavailable: {err}"
    print(result["varlen_attn_signature"])
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
