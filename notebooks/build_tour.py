"""Writes notebooks/tour.ipynb (stored without outputs): `python notebooks/build_tour.py`."""
import nbformat as nbf

cells = [
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
    ("code", "plain = interp.intervene(vlm).generate(batch, max_new_tokens=3)\n"
             "blind = interp.intervene(vlm, interp.EdgeMask('text', 'vision')).generate(batch, max_new_tokens=3)\n"
             "list(zip([s.answer for s in samples], plain.texts, blind.texts))"),
    ("code", "aif = interp.intervene(vlm, interp.AIF(max_ratio=0.5)).generate(batch, max_new_tokens=3)\n"
             "d = aif.diagnostics['aif']\nprint('chosen ratio per row', d['ratio'].tolist(), 'prefix reuse', d['reuse'])\n"
             "aif.texts"),
    ("code", "evidence = lay.boxes_to_mask([list(s.boxes) for s in samples])\n"
             "st = interp.capture(vlm, batch, queries='last', keep_probs=False)\n"
             "inside = [float(st.vision_max[-1, b][lay.vision_positions()[b] >= 0][evidence[b][lay.vision[b]]].sum()) for b in range(len(samples))]\n"
             "inside"),
    ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 3))\n"
             "grid = lay.scatter(st.vision_mean[-1, 0], row=0)[0]['image']\n"
             "ax.imshow(samples[0].image)\nax.imshow(grid, extent=(0, 64, 64, 0), alpha=0.6, cmap='magma')\n"
             "ax.set_title(samples[0].question, fontsize=8)\nax.axis('off');"),
]
nb = nbf.v4.new_notebook()
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, __file__.replace("build_tour.py", "tour.ipynb"))
