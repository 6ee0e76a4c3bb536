"""Where datasets, generated stand-ins and decoded-image caches live: fastai's data folder."""

__all__ = ['data_home']


def data_home():
    "fastai's data folder (`~/.fastai/data` unless fastai's config.ini says otherwise): datasets land here."
    from fastai.data.external import fastai_path  # imported here: only this place needs fastai's config
    return fastai_path('data')
