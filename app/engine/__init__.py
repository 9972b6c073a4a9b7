"""The realtime engine and what it drives: `engine` (the worker thread), `messages` (its commands,
events and state), `compute` (the Protocol its backends implement), `run` (what a run opens),
`local` (the model on this machine), `remote` (Kyutai's server), and `fetch` (model downloads
for the window, on a worker thread of their own)."""
