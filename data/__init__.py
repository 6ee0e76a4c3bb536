"Datasets, DataBlocks and offline generators for Tiny ImageNet and the lunar-rock data."
