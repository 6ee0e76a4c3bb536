"Shared experiment machinery: run folders, callbacks, metrics, fit helpers and reports."
