"""Writes the notebooks (stored without outputs): `python notebooks/build.py`.

One notebook per analysis (it calls the same `analyses.<name>.main` as the command line, on a small slice of
the toy data, then shows the figure and the numbers) plus `tour.ipynb`, the API in ten cells.
"""
import os

import nbformat as nbf

HERE = os.path.dirname(os.path.abspath(__file__))

TOUR = [
    ("md", "# interp in ten cells\nLoad a VLM, prepare inputs, capture attention statistics, intervene, generate. "
           "Runs on CPU in seconds on the shipped toy model (`interp.toy.load()`); pass a hub id or a local "
           "directory to `interp.load` for a real model."),
    ("code", "import torch\nimport interp\nvlm = interp.toy.load()\nvlm"),
    ("code", "samples = interp.toy.dataset(6, seed=interp.toy.EVAL_SEED)\n"
             "batch = vlm.prepare(images=[s.image for s in samples], questions=[s.question for s in samples])\n"
             "[(s.question, s.answer) for s in samples]"),
    ("code", "lay = batch.layout\nprint('tokens', lay.shape, 'vision per row', lay.num_vision.tolist())\n"
             "print('grid of the first image', lay.images[0][0].grid)"),
    ("code", "stats = interp.capture(vlm, batch, queries='last')\n"
             "print('share of the last prompt token\\'s attention on vision, per layer (row 0):')\n"
             "print(stats.vision_ratio[:, 0])"),
    ("code", "plain = interp.intervene(vlm).generate(batch, max_new_tokens=1)\n"
             "blind = interp.intervene(vlm, interp.EdgeMask('text', 'vision')).generate(batch, max_new_tokens=1)\n"
             "list(zip([s.answer for s in samples], plain.texts, blind.texts))"),
    ("code", "aif = interp.intervene(vlm, interp.AIF(max_ratio=0.5)).generate(batch, max_new_tokens=1)\n"
             "d = aif.diagnostics['aif']\nprint('chosen ratio per row', d['ratio'].tolist(), 'prefix reuse', d['reuse'])\n"
             "aif.texts"),
    ("code", "# the shipped toy VIF was trained jointly with its base: load_vif gives that base and the VIF\n"
             "run_on, vif = interp.toy.load_vif()\n"
             "out = interp.intervene(run_on, vif).generate(batch, max_new_tokens=1)\nout.texts"),
    ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 3))\n"
             "grid = lay.scatter(stats.vision_mean[-1, 0], row=0)[0]['image']\n"
             "ax.imshow(samples[0].image)\nax.imshow(grid, extent=(0, 64, 64, 0), alpha=0.6, cmap='magma')\n"
             "ax.set_title(samples[0].question, fontsize=8)\nax.axis('off');"),
]

# name → (limit, what to print after the run)
ANALYSES = {
    "vision_attention_ratio": (60, "import numpy as np\nnp.nanmean(np.asarray(rec['ratio_answer'], float), 0).round(3)"),
    "attenuation_violin": (60, "import numpy as np\nnp.nanmean(np.asarray(rec['entropy'], float), 0).round(2)"),
    "attention_heatmaps": (4, "[(s['question'], s['prediction'], s['box_share']) for s in rec['samples']]"),
    "token_dynamics": (60, "print(rec['table'])"),
    "mu_masking": (40, "rec['accuracy']['lowest']['mean'], rec['accuracy']['highest']['mean']"),
    "aif_ratios": (60, "rec['chosen_share']"),
    "oracle_masks": (40, "print(rec['table'])"),
    "vif_focus": (40, "print(rec['table'])"),
    "vif_ablation": (40, "print(rec['table'])"),
    "method_table": (40, "print(rec['table'])"),
    "patching": (4, "from analyses.patching import finding\nprint(finding(rec))"),
    "knockout_flow": (48, "from analyses.knockout_flow import finding\nprint(finding(rec))"),
    "logit_lens": (48, "from analyses.logit_lens import finding\nprint(finding(rec))"),
    "premises": (60, "print(rec['paragraph'])\nprint(rec['table'])"),
}


def cells_for(name, limit, show):
    import importlib

    doc = importlib.import_module(f"analyses.{name}").__doc__.strip()
    first = doc.split("\n\n")[0]
    return [
        ("md", f"# `{name}`\n{first}\n\nThe same code as `python -m analyses.{name}`; here on {limit} toy samples "
               "(the main command uses more). Figures and numbers go to `nb_out/`."),
        ("code", f"from analyses import {name}\nrec = {name}.main(['--model', 'toy', '--data', 'toy', '--limit', "
                 f"'{limit}', '--out', 'nb_out', '--no-progress'])"),
        ("code", f"from IPython.display import Image\nImage('nb_out/{name}.png')"),
        ("code", show),
        ("code", f"# the figure is redrawn from the saved numbers alone\n{name}.plot('nb_out/{name}.json', 'nb_out')"),
    ]


def write(name, cells, out=HERE):
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # fixed ids: a rebuild changes only what changed
        cell.id = f"{name}-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, os.path.join(out, f"{name}.ipynb"))


def build(out=HERE):
    """Write every notebook into `out`."""
    write("tour", TOUR, out)
    for name, (limit, show) in ANALYSES.items():
        write(name, cells_for(name, limit, show), out)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, os.path.dirname(HERE))
    build()
