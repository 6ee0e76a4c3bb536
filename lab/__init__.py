"Shared experiment machinery: recipes, the CLI, run folders, training, callbacks, metrics, reports."
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')  # raised inside fastai's imports
