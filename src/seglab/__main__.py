"""``python -m seglab`` (also what torchrun launches: ``torchrun --nproc_per_node=2 -m seglab train ...``)."""
import sys

from .cli.main import main

sys.exit(main())
