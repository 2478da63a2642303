"""Train a VIF module on a frozen base model (the CLI; the code is in `trainer.py`).

    python -m interp.vif.train --model toy --steps 2000 --minutes 10 --threads 1 --out interp/toy/vif
    python -m interp.vif.train --model path/to/hf_dir --data path/to/samples.jsonl --steps 5000 --out runs/vif

Re-running with the same --out resumes from its last checkpoint (weights, optimizer state and step).
"""

from interp.methods.vif.trainer import main

if __name__ == "__main__":
    main()
