"""Task 1.1-1.2: a 5-layer net whose layer-3 weight variance is twice that of layers 2 and 4, against its control twin.

Checks the weight-variance ratios on the actual weights, runs random inputs (and real Tiny ImageNet images when
found) through both nets for each seed, and compares the activations after global average pooling (GAP):
overlaid histograms, a statistics table and an explanation whose numbers come from this run.
Writes `<out>/task1/variance/<timestamp>/`.
"""

import math
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import torch

from fastai_lab.arch.probes import VarianceProbeNet, activation_profile, ks_distance, weight_variances
from fastai_lab.data.probes import probe_images
from fastai_lab.stat_plots import plot_layer_profiles
from fastai_lab.figures import save_figure
from fastai_lab.tables import write_table
from fastai_lab.cli import script
from fastai_lab.flags import parse_seeds, probe_flags
from fastai_lab.machine import environment_info
from fastai_lab.results import stage_dir
from fastai_lab.io import write_json


def gap_histograms(gaps, path):
    "One row per input source: raw GAP values of both nets, then each divided by its own std (the shape)."
    fig, axs = plt.subplots(len(gaps), 2, figsize=(11, 3.6 * len(gaps)), squeeze=False)
    for row, (source, nets) in zip(axs, gaps.items()):
        for ax, scaled in zip(row, (False, True)):
            for k, (net, v) in enumerate(nets.items()):   # dashed second line: visible where the two coincide
                ax.hist(v / v.std() if scaled else v, bins=120, density=True, histtype='step', lw=1.4, label=net,
                        ls=('-', '--')[k % 2])
            ax.set(yscale='log', ylabel='density', title=f"{source}: GAP {'/ own std' if scaled else 'activations'}",
                   xlabel='GAP value / std' if scaled else 'GAP value'); ax.legend(fontsize=8)
    save_figure(fig, path)


def explain(findings, ratio, seeds, worst):
    "The markdown explanation: every number and every conclusion comes from `findings` of this run."
    expected = math.sqrt(ratio)
    lines = [f"# Layer-3 weight variance x{ratio:g} vs control ({len(seeds)} seed{'s' * (len(seeds) > 1)}: {seeds})", "",
             f"Measured weight-variance ratios: conv3/conv2 and conv3/conv4 are within {worst:.1e} (relative) of "
             f"{ratio:g} for the test net and of 1 for the control, on the actual weights.", ""]
    for source, f in findings.items():
        noise = (f"far outside the {100 * f['seed_cv']:.1f}% seed-to-seed spread of the control's GAP std."
                 if len(seeds) > 1 else "measured on one seed, so the seed-to-seed spread is unknown (run --seeds 3).")
        lines += [f"## {source}", "",
                  f"- GAP std ratio (x{ratio:g} net / control): **{f['std_ratio']:.4f}**, mean ratio {f['mean_ratio']:.4f}; "
                  f"sqrt({ratio:g}) = {expected:.4f}.",
                  f"- Per-layer activation-std ratios, layers 1-5: {', '.join(f'{r:.3f}' for r in f['layer_std_ratios'])}.",
                  f"- KS distance between the raw GAP distributions: {f['ks_raw']:.3f}; after dividing each by its own std: "
                  f"{f['ks_shape']:.3f}."]
        if abs(f['std_ratio'] / expected - 1) < 0.02:
            lines.append(
                f"- Conclusion: a {ratio:g}x weight variance in layer 3 multiplies every activation from layer 3 on, and the GAP "
                f"output, by sqrt({ratio:g}) (measured {f['std_ratio']:.4f}), while layers 1-2 are untouched (ratios "
                f"{f['layer_std_ratios'][0]:.3f}, {f['layer_std_ratios'][1]:.3f}). The nets have no biases and ReLU is positively "
                "homogeneous, so the larger weight scale passes straight through to the output: the GAP distribution is "
                f"stretched (KS {f['ks_raw']:.3f}) but keeps its shape (KS {f['ks_shape']:.3f} once scaled). The "
                f"{100 * (f['std_ratio'] - 1):.0f}% change of scale is {noise} No normalisation layer follows to undo it, "
                "so a head on these features would see logits scaled by the same factor.")
        else:
            lines.append(f"- Conclusion: the GAP std ratio {f['std_ratio']:.4f} is more than 2% away from sqrt({ratio:g}), "
                         "so the scale does not pass straight through here (see the per-layer ratios).")
        lines.append("")
    return '\n'.join(lines)


def flags(p):
    probe_flags(p, 'task1/variance', seeds='3', quick='fewer inputs',
                data='Tiny ImageNet root for real images (default: known places; none found: random inputs only)')
    p.add_argument('--ratio', type=float, default=2.0,
                   help='layer-3 weight variance over that of layers 2 and 4 (not 1: that is the control)')
    p.add_argument('--size', type=int, default=64, help='input side in pixels (64 = Tiny ImageNet)')


def run(args):
    "Compare the GAP activations of the doubled-variance net and its control over several seeds."
    data, out, quick, seeds, ratio, size = (args.data, args.out, args.quick, args.seeds, args.ratio, args.size)
    if ratio == 1: raise SystemExit("--ratio 1 is the control net itself: give another ratio")
    seeds, n = parse_seeds(seeds), 256 if quick else 1024
    inputs = {'random N(0,1)': torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1234))}
    images, image_source = probe_images(data, n // 2, size)
    if images is not None: inputs['images'] = images
    print(f"inputs: {n} random; images: {image_source}")
    nets = {'control (1x)': 1.0, f'layer3 x{ratio:g}': ratio}
    var_checks, gaps, rows = [], {s: {k: [] for k in nets} for s in inputs}, []
    for seed in seeds:
        for net_name, r in nets.items():
            model = VarianceProbeNet(layer3_ratio=r, seed=seed)
            v = list(weight_variances(model).values())
            var_checks.append(dict(net=net_name, seed=seed, **{f'var_conv{i + 1}': x for i, x in enumerate(v)},
                                   ratio_3_2=v[2] / v[1], ratio_3_4=v[2] / v[3],
                                   rel_error=max(abs(v[2] / v[1] / r - 1), abs(v[2] / v[3] / r - 1))))
            print(f"seed {seed} {net_name}: weight variance conv3/conv2 = {v[2] / v[1]:.7f}, conv3/conv4 = {v[2] / v[3]:.7f}")
            for source, x in inputs.items():
                layer_std, pooled = activation_profile(model, x)
                gaps[source][net_name].append(pooled.numpy().ravel())
                rows.append(dict(net=net_name, input=source, seed=seed, **{f'std_layer{i + 1}': s for i, s in enumerate(layer_std)}))
    worst = max(c['rel_error'] for c in var_checks)
    if worst > 1e-5: raise SystemExit(f"weight-variance ratios are off by up to {worst:.2e} (relative)")

    table = []
    for source in inputs:
        for net_name in nets:
            per_seed = [r for r in rows if r['input'] == source and r['net'] == net_name]
            v = np.concatenate(gaps[source][net_name])
            q = np.quantile(v, [.05, .25, .5, .75, .95])
            table.append(dict(input=source, net=net_name, n_values=v.size, mean=v.mean(), std=v.std(),
                              q05=q[0], q25=q[1], median=q[2], q75=q[3], q95=q[4], max=v.max(),
                              gap_std_seed_cv=np.std([g.std() for g in gaps[source][net_name]]) / v.std(),
                              **{f'std_layer{i}': np.mean([r[f'std_layer{i}'] for r in per_seed]) for i in range(1, 6)}))
    ctrl, test = nets
    findings = {}
    for source in inputs:
        a, b = (np.concatenate(gaps[source][k]) for k in (ctrl, test))
        t = {r['net']: r for r in table if r['input'] == source}
        findings[source] = dict(std_ratio=b.std() / a.std(), mean_ratio=b.mean() / a.mean(),
                                layer_std_ratios=[t[test][f'std_layer{i}'] / t[ctrl][f'std_layer{i}'] for i in range(1, 6)],
                                ks_raw=ks_distance(a, b), ks_shape=ks_distance(a / a.std(), b / b.std()),
                                seed_cv=t[ctrl]['gap_std_seed_cv'])
    explanation = explain(findings, ratio, seeds, worst)

    with stage_dir(out, 'task1/variance') as folder:
        gap_histograms({s: {k: np.concatenate(v) for k, v in g.items()} for s, g in gaps.items()}, folder / 'gap_histogram.png')
        plot_layer_profiles({f'activation std per layer ({s})': {r['net']: [r[f'std_layer{i}'] for i in range(1, 6)]
                                                                 for r in table if r['input'] == s} for s in inputs},
                            folder / 'layer_std.png', names=[f'conv{i}' for i in range(1, 6)])
        write_table(table, folder, title='GAP activations: statistics (pooled over seeds) and per-layer activation std')
        write_table(var_checks, folder, name='weight_variances', title='Measured weight variances per layer')
        (folder / 'explanation.md').write_text(explanation)
        write_json(folder / 'summary.json', dict(findings=findings, max_ratio_error=worst, expected_std_ratio=math.sqrt(ratio),
                                                 images=image_source, best=None, profile='quick' if quick else 'full',
                                                 seeds=seeds))
        write_json(folder / 'config.json', dict(data=data, out=out, quick=quick, seeds=seeds, ratio=ratio, size=size,
                                                n_random=n, images=image_source, environment=environment_info()))
    print(explanation)


main = script(run, flags)
if __name__ == '__main__': main()
