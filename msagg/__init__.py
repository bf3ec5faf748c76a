"""msagg: multi-level and multi-scale SampleCNN features for music classification (Lee & Nam, 2017).

The package installs one import name, ``msagg``; its parts live in the repository's top-level folders:
``msagg.pipeline`` (the command line and protocols), ``msagg.stages`` (prepare, pretrain, extract,
classify, predict), ``msagg.data`` (audio, datasets, file formats) and ``msagg.models`` (Keras builders).
Importing ``msagg`` loads neither TensorFlow nor Keras.
"""

import os as _os

__version__ = "0.1.0"

# Run from a checkout (this folder beside setup.py and the four folders), the sub-packages are the
# checkout's own folders, whichever msagg is installed; an installed msagg holds them inside itself.
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "setup.py")) and _os.path.isfile(
        _os.path.join(_CHECKOUT, "stages", "__init__.py")):
    __path__.append(_CHECKOUT)
