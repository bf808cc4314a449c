# The suite runs against the backend of `config :council_ex, :backend`
# (config/config.exs sets :nif when COUNCIL_EX_BACKEND=nif; see
# scripts/run-beam-tests, which runs it once per backend). Tests of the C
# node itself (its process, distribution, the relay) are tagged
# :cnode_only and tests of the NIF itself :nif_only; each run leaves out
# the other backend's. Tests tagged :cnode need a C node
# (priv/council_node or COUNCIL_NODE) when the backend is :node; run only
# the rest with `mix test --exclude cnode`.
# A bare assert_receive waits up to 10 s (ExUnit's default, 100 ms, is too
# short for a loaded machine running the ASan build of the C node); it
# returns as soon as the message is there.
backend = CouncilEx.Backend.backend()
IO.puts("ExUnit: backend #{inspect(backend)}")
exclude = if backend == :nif, do: [:cnode_only], else: [:nif_only]
ExUnit.start(capture_log: true, assert_receive_timeout: 10_000, exclude: exclude)
