import Config

# The library needs no configuration of its own. For its tests only: the
# ExUnit suite runs once per backend (scripts/run-beam-tests), the second
# time with COUNCIL_EX_BACKEND=nif. A project that depends on council_ex
# does not read this file; it sets `config :council_ex, backend: :nif` in
# its own configuration (README section 4).
if config_env() == :test do
  # exec is opt-in (README "Trust model"): the suite's exec members run cat
  config :council_ex, exec_allow: [System.find_executable("cat") || "/bin/cat"]

  case System.get_env("COUNCIL_EX_BACKEND") do
    backend when backend in [nil, "", "node"] -> :ok
    "nif" -> config :council_ex, backend: :nif
    other -> raise "COUNCIL_EX_BACKEND must be node or nif, got: #{inspect(other)}"
  end
end
