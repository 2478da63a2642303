"""Writes the notebooks (stored without outputs): `python notebooks/build.py`.

One notebook per analysis in `analyses.registry` (it calls the analysis's `compute` with keyword arguments on a
few toy samples, then shows the figure and its REPORT paragraph) plus `tour.ipynb`, the API in ten cells.
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

def cells_for(analysis):
    """An analysis's notebook: its registered `compute` on a few toy samples, the figure, the REPORT paragraph."""
    name, n = analysis.name, analysis.notebook_limit
    first = analysis.doc.strip().split("\n\n")[0]
    return [
        ("md", f"# {analysis.title} (`{name}`)\n{first}\n\nThe same code as `python -m analyses.{name}`: `compute` "
               f"measures (here on {n} toy samples; the main job uses more), `plot` draws from those numbers alone, "
               "`finding` is the paragraph REPORT.md prints."),
        ("code", f"from analyses import {name}\nrec = {name}.compute(model='toy', data='toy', limit={n}, progress=False)"),
        ("code", f"from IPython.display import Image\n{name}.plot(rec, 'nb_out')\nImage('nb_out/{name}.png')"),
        ("code", f"print({name}.finding(rec))\nif 'table' in rec:\n    print(rec['table'])"),
    ]


def write(name, cells, out=HERE):
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # fixed ids: a rebuild changes only what changed
        cell.id = f"{name}-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, os.path.join(out, f"{name}.ipynb"))


def build(out=HERE):
    """Write every notebook into `out`: the tour, then one per registered analysis."""
    from analyses import registry

    write("tour", TOUR, out)
    for analysis in registry.every():
        write(analysis.name, cells_for(analysis), out)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, os.path.dirname(HERE))
    build()
