"""Reading one image file: the lab's one check that a file is a readable image (decoded in full)."""

__all__ = ['check_image']


def check_image(path):
    """The (width, height) of the image at `path`, decoded in full (`Image.open` alone reads the header only); a
    ValueError naming it when it is not a readable image. The lab's one image check: the data checks (`fastai_lab.data.cache`) run it on a
    file whose item failed to decode, and `predict.py` on every file before it loads the model."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except UnidentifiedImageError: reason = 'not an image format Pillow knows'
    except Exception as e: reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"{path}: not a readable image ({reason})")
