"""The command line shared by the Tiny ImageNet training scripts (D7): one set of flags, declared once."""
import sys

from fastcore.script import call_parse

from .profile import pick_profile
from .runs import parse_seeds

__all__ = ['training_script']


def training_script(run, epochs_key='epochs'):
    """A fastcore CLI (`--help` included) for `run(data, out, profile, seeds, epochs)`, the body of a training script.

    The flags are resolved first: the profile (quick on a CPU unless --full), the list of seeds and the epochs
    (default: the profile's `epochs_key`). Call the result as `main()` under `if __name__ == '__main__'`."""
    def main(data: str = None,  # Tiny ImageNet folder (default: known places, else a generated offline set)
             out: str = 'results',  # results folder
             quick: bool = False,  # quick profile: few images and epochs (default without a GPU)
             full: bool = False,  # full profile even without a GPU
             epochs: int = None,  # epochs (default: the profile's)
             seeds: str = '1'):  # seeds: a count (2 means 0,1) or a list (0,1)
        profile = pick_profile(quick, full)
        return run(data=data, out=out, profile=profile, seeds=parse_seeds(seeds),
                   epochs=int(epochs or profile[epochs_key]))
    main.__doc__ = sys.modules[run.__module__].__doc__ or run.__doc__  # --help shows the script's docstring
    return call_parse(main)
