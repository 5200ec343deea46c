"""``python -m ibq_hf.cli`` (and ``accelerate launch -m ibq_hf.cli ...``): the ``ibq-hf`` command."""

import sys

from . import main

sys.exit(main())
