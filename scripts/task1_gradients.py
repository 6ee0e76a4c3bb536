"""Task 1.3-1.4: gradients through depth in a net of alternating Conv2d and ReLU layers.

One `backward()` on random data (MSE to a random target) per seed; per-layer weight-gradient norms (plot, log
scale), the check that the first layer's gradient is smaller than the last layer's (L2 norm of the weight
gradient, and mean |grad| per weight; exit status 1 if it fails for any seed), the forward and backward signal
that explain it, and how the picture changes with the initialisation and the depth.
Writes `<out>/task1/gradients/<timestamp>/`.
"""

import math
import numpy as np
import pandas as pd
import torch

from fastai_lab.arch.probes import DeepConvReLU
from fastai_lab.data.probes import probe_images
from fastai_lab.callbacks import backward_probe
from fastai_lab.stat_plots import plot_layer_norms, plot_layer_profiles
from fastai_lab.tables import write_table
from fastai_lab.cli import script
from fastai_lab.flags import parse_seeds, probe_flags
from fastai_lab.machine import environment_info
from fastai_lab.results import stage_dir
from fastai_lab.io import write_json


def probe(depth, seeds, batch, init='default', gain=1.0, images=None):
    "Per-seed `(GradientStats, per-layer frame)` of one backward pass; random inputs unless `images` are given."
    runs = []
    for seed in seeds:
        model = DeepConvReLU(depth, init=init, gain=gain, seed=seed)
        g = torch.Generator().manual_seed(10_000 + seed)
        x = images if images is not None else torch.randn(batch, 3, model.input_size, model.input_size, generator=g)
        target = torch.randn(len(x), 64, 8, 8, generator=g)
        runs.append(backward_probe(model, x, target))
    return runs


def first_vs_last(runs, **variant):
    "Row of the table: first/last weight-gradient norms (mean over seeds), their ratios and how many seeds hold."
    l2 = np.array([[s.grad_norms[0, 0], s.grad_norms[0, -1]] for s, _ in runs])
    ma = np.array([[s.grad_mean_abs[0, 0], s.grad_mean_abs[0, -1]] for s, _ in runs])
    r2, rm = l2[:, 0] / l2[:, 1], ma[:, 0] / ma[:, 1]
    return dict(**variant, l2_first=l2[:, 0].mean(), l2_last=l2[:, 1].mean(), l2_ratio=r2.mean(), l2_ratio_std=r2.std(),
                mean_abs_first=ma[:, 0].mean(), mean_abs_last=ma[:, 1].mean(), mean_abs_ratio=rm.mean(),
                mean_abs_ratio_std=rm.std(), seeds_holding=int(((r2 < 1) & (rm < 1)).sum()), n_seeds=len(runs))


def per_layer(runs, column):
    "`column` of the per-layer frames, averaged over seeds."
    return np.mean([f[column].to_numpy() for _, f in runs], axis=0)


def explain(table, layers, seeds, batch, depth, depths, image_source):
    "The markdown explanation: every number, and which conclusion is drawn, comes from this run's `table` and `layers`."
    r, n = {t['variant']: t for t in table}, len(seeds)
    main, ok = table[0], table[0]['seeds_holding'] == n
    fin, fout = layers.input_rms.to_numpy(), layers.out_grad_rms.to_numpy()
    half = depth // 2
    per = lambda a, b, k: (b / a) ** (1 / k)   # geometric-mean factor per layer
    back, fwd1, fwd2 = per(fout[-1], fout[0], depth - 1), per(fin[0], fin[half], half), per(fin[half], fin[-1], depth - 1 - half)
    convs = [m for m in DeepConvReLU(depth) if isinstance(m, torch.nn.Conv2d)]
    per_filter = [c.weight[0].numel() for c in convs]
    bias_std = 1 / math.sqrt(3 * per_filter[-1])   # PyTorch's default conv bias: U(+-1/sqrt(fan_in))
    kaim = [r[k]['mean_abs_ratio'] for k in ('Kaiming x0.7', 'Kaiming', 'Kaiming x1.4')]
    dr = [r['default (PyTorch)' if d == depth else f'depth {d}']['mean_abs_ratio'] for d in depths]
    gain_spread, depth_spread = max(kaim) / min(kaim), dr[0] / dr[-1]
    failing = [f"{t['variant']} ({t['seeds_holding']}/{n} seeds hold)" for t in table if t['seeds_holding'] < n]
    text = [f"# Gradients through depth ({n} seed{'s' * (n > 1)}, batch {batch}, one backward each)", "",
            f"Net: {depth} x (Conv2d 3x3 -> ReLU), 64 channels, input {DeepConvReLU(depth).input_size} px, output "
            "(B, 64, 8, 8), PyTorch's default init. Loss: MSE between the output and a N(0,1) target, for N(0,1) inputs.", "",
            "**Norm used**: the L2 (Frobenius) norm of each conv's weight gradient, ||dL/dW||_2; also mean |dL/dW| per "
            f"weight, which does not grow with the layer's size (conv1 has {per_filter[0]} weights per filter, the last conv "
            f"{per_filter[-1]}).", "",
            f"**Check**: first layer {main['l2_first']:.3e} vs last layer {main['l2_last']:.3e} (L2, mean over seeds; ratio "
            f"{main['l2_ratio']:.4f} +- {main['l2_ratio_std']:.4f}); mean |grad| {main['mean_abs_first']:.3e} vs "
            f"{main['mean_abs_last']:.3e} (ratio {main['mean_abs_ratio']:.3f} +- {main['mean_abs_ratio_std']:.3f}). "
            f"First < last by both norms in {main['seeds_holding']}/{n} seeds: **{'PASS' if ok else 'FAIL'}**.", "",
            "**Why**: dL/dW of a conv sums (its input) x (the loss gradient at its output) over positions and samples, so "
            "it follows the product of each layer's forward RMS and backward RMS (`layers.csv`, `signal_per_layer.png`).",
            f"- Backward, the gradient RMS goes from {fout[-1]:.2e} at the last conv to {fout[0]:.2e} at the first, "
            f"x{back:.2f} per layer. " + (
                "Each step back multiplies it by W^T and the ReLU mask; PyTorch's default init has Var(w) = 1/(3 fan_in), "
                f"so the expected factor is sqrt(fan_out Var(w) / 2) = sqrt(1/6) = {math.sqrt(1 / 6):.2f}: the gradient "
                "vanishes toward the input." if back < 1 else "It does not shrink toward the input here."),
            f"- Forward, the input RMS goes x{fwd1:.2f} per layer over the first {half} layers and x{fwd2:.2f} per layer over "
            f"the rest, down to {fin[-1]:.3f}. " + (
                f"Its shrinking slows where it nears the biases' scale (std {bias_std:.3f}), which hold it up, while the "
                "backward shrinking goes on." if fwd1 < fwd2 and back < 1 else "It does not level off against the biases here."),
            "- So the weight gradient " + (
                f"grows from the first layer to the last (mean |grad| ratio {main['mean_abs_ratio']:.3f}); for the L2 "
                f"norm, conv1's {per_filter[-1] / per_filter[0]:.0f}x fewer weights per filter lower it further (ratio "
                f"{main['l2_ratio']:.4f})." if ok else "is not smaller at the first layer for every seed: see the table."), "",
            f"**Initialisation** (`init_and_depth.png`, left; mean |grad| first/last): Kaiming with zero bias and gain "
            f"0.7 / 1 / 1.4: {kaim[0]:.3f} / {kaim[1]:.3f} / {kaim[2]:.3f}, against {r['default (PyTorch)']['mean_abs_ratio']:.3f} "
            "for the default init. Without biases the forward scale at layer l goes as gain^l and the backward one as "
            "gain^(L-l), so every layer's weight gradient gets about the same gain^(L-1): across these gains the ratio "
            f"changes {gain_spread:.1f}x, {'little next to' if gain_spread < depth_spread else 'as much as'} the "
            f"{depth_spread:.0f}x from depth {depths[0]} to {depths[-1]}. "
            + ("What tilts the default-init profile is then the bias floor, which Kaiming's zero biases remove."
               if r['default (PyTorch)']['mean_abs_ratio'] < min(kaim) else ""), "",
            f"**Depth** (right; default init): mean |grad| first/last = "
            f"{', '.join(f'{v:.2e} at depth {d}' for d, v in zip(depths, dr))}. "
            + ("The ratio falls with every added layer: the backward factor compounds while the forward signal is held "
               "by the biases." if all(a > b for a, b in zip(dr, dr[1:])) else "The ratio does not fall monotonically with depth.")]
    if 'depth 6' in r:
        text.append(f"At depth 6 (the minimum) the per-weight ratio is {dr[0]:.2f} and holds in {r['depth 6']['seeds_holding']}/{n} "
                    f"seeds, against {main['mean_abs_ratio']:.2f} at the checked depth {depth}.")
    if 'default, real images' in r:
        t = r['default, real images']
        text += ["", f"**Real images** instead of random inputs, {image_source}: L2 ratio {t['l2_ratio']:.4f}, mean |grad| "
                 f"ratio {t['mean_abs_ratio']:.3f}, first < last in {t['seeds_holding']}/{n} seeds."]
    text += ["", "Variants failing the first < last condition: " + '; '.join(failing) + '.' if failing else
             "Every variant satisfies the first < last condition for every seed."]
    return '\n'.join(text) + '\n'


def flags(p):
    probe_flags(p, 'task1/gradients', seeds='5', quick='smaller batch and fewer depths',
                data='Tiny ImageNet root: also check one batch of real images (default: known places, if any)')
    p.add_argument('--depth', type=int, default=8,
                   help='Conv2d layers of the checked net (each followed by a ReLU; at least 6)')
    p.add_argument('--batch', type=int, default=16, help='random inputs per backward pass')


def run(args):
    "Check that the first layer's gradient is smaller than the last layer's, and show why, for several seeds."
    data, out, quick, seeds, depth, batch = (args.data, args.out, args.quick, args.seeds, args.depth, args.batch)
    if depth < 6: raise SystemExit(f"--depth {depth}: T1.3 asks for at least 6 Conv2d/ReLU layers")
    seeds, batch = parse_seeds(seeds), min(batch, 8) if quick else batch
    main_runs = probe(depth, seeds, batch)
    inits = {'default (PyTorch)': ('default', 1.0), 'Kaiming x0.7': ('kaiming', 0.7), 'Kaiming': ('kaiming', 1.0),
             'Kaiming x1.4': ('kaiming', 1.4)}
    init_runs = {k: main_runs if v == ('default', 1.0) else probe(depth, seeds, batch, *v) for k, v in inits.items()}
    depths = sorted({6, depth, 12} | (set() if quick else {16}))
    depth_runs = {d: main_runs if d == depth else probe(d, seeds, batch) for d in depths}
    table = [first_vs_last(r, variant=k, init=inits[k][0], gain=inits[k][1], depth=depth) for k, r in init_runs.items()]
    table += [first_vs_last(depth_runs[d], variant=f'depth {d}', init='default', gain=1.0, depth=d) for d in depths if d != depth]
    images, image_source = probe_images(data, batch, DeepConvReLU(depth).input_size)
    if images is not None:
        table.append(first_vs_last(probe(depth, seeds, batch, images=images), variant='default, real images',
                                   init='default', gain=1.0, depth=depth))
    main_row = table[0]
    layers = pd.DataFrame({c: per_layer(main_runs, c) for c in ('grad_norm', 'grad_mean_abs', 'weight_norm', 'input_rms', 'out_grad_rms')})
    layers.insert(0, 'layer', main_runs[0][0].names)
    ok = main_row['seeds_holding'] == len(seeds)

    explanation = explain(table, layers, seeds, batch, depth, depths, image_source)
    with stage_dir(out, 'task1/gradients') as folder:
        plot_layer_norms(main_runs[0][0], folder / 'grad_per_layer.png', title=f'one backward, depth {depth}, seed {seeds[0]}')
        plot_layer_profiles({'forward and backward signal (mean over seeds)': {
            'input RMS (forward)': layers.input_rms, 'output-gradient RMS (backward)': layers.out_grad_rms,
            'mean |weight grad|': layers.grad_mean_abs}}, folder / 'signal_per_layer.png', names=list(layers.layer))
        rel = lambda runs: per_layer(runs, 'grad_mean_abs') / per_layer(runs, 'grad_mean_abs')[-1]
        plot_layer_profiles({f'init (depth {depth}): mean |grad| / last layer': {k: rel(v) for k, v in init_runs.items()},
                             'depth (default init): mean |grad| / last layer': {f'depth {d}': rel(v) for d, v in depth_runs.items()}},
                            folder / 'init_and_depth.png')
        write_table(table, folder, title='First vs last layer weight gradient (mean over seeds)')
        layers.to_csv(folder / 'layers.csv', index=False)
        (folder / 'explanation.md').write_text(explanation)
        write_json(folder / 'summary.json', dict(passed=ok, norm='L2 norm of the weight gradient (and mean |grad|)',
                                                 best=None, checked=main_row, variants=table, images=image_source,
                                                 profile='quick' if quick else 'full', seeds=seeds))
        write_json(folder / 'config.json', dict(data=data, out=out, quick=quick, seeds=seeds, depth=depth, batch=batch,
                                                images=image_source, environment=environment_info()))
    print(explanation)
    if not ok: raise SystemExit(1)


main = script(run, flags)
if __name__ == '__main__': main()
