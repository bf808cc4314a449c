# bench/libstart_case.exs - the "libstart" case of `make bench`, loaded by
# bench/driver.exs.
#
# What a user pays for a start: CouncilEx.start(Module, input), the
# library's API with its application running (the option checks, the
# council's spec checked and encoded, the run id, the run index), on each
# backend, beside the backend's own start of the same run that the starts
# rows measure, and against the baseline the "nif" case's starts row uses
# (BenchBeam.Run started under a local DynamicSupervisor with a unique
# Registry). It runs in a fresh OS process (bench/lib_start.exs) that
# compiles lib/ and starts the application as a project would: first with
# backend :nif, then with backend :node and the C node the library starts
# and manages itself (priv/council_node with its default arguments, on
# this run's epmd).

defmodule B.LibStart do
  @moduledoc false
  import B, only: [c: 2, row: 1, fmt: 2]

  @target "(info: the cost of a start through the library's API; the starts rows carry the target)"

  def case_libstart do
    script = Path.join(Path.dirname(__ENV__.file), "lib_start.exs")
    {n, reps} = c({200, 1}, {2000, 5})
    name = "bench_lib_#{System.pid()}_#{System.unique_integer([:positive])}"

    {text, rc} =
      System.cmd(
        "elixir",
        ["--sname", name, script, Integer.to_string(n), Integer.to_string(reps)],
        stderr_to_stdout: true
      )

    at = B.at_lines(text)

    for {backend, title} <- [
          nif: "NIF backend, local",
          node: "C node backend (the library's managed node)"
        ] do
      case_name = "library start: CouncilEx.start(Module, input), #{title}, 1 caller"
      get = fn series, stat -> at["#{backend}_#{series}_#{stat}"] end

      if rc == 0 and get.("lib", "median") do
        lib = get.("lib", "median")
        raw = get.("raw", "median")
        beam = get.("beam", "median")

        row(
          case: case_name,
          metric: "median latency per start (#{reps}x#{n} sequential starts per side, alternating)",
          unit: :us,
          ours: lib,
          beam: beam,
          ours_detail:
            "median #{fmt(lib, :us)}, p99 #{fmt(get.("lib", "p99"), :us)} (medians of the repetitions " <>
              "#{fmt(get.("lib", "repmed_min"), :us)}-#{fmt(get.("lib", "repmed_max"), :us)}); " <>
              "a %CouncilEx.Spec{}: #{fmt(get.("spec", "median"), :us)}; the backend's own start " <>
              "of the run from its JSON (the starts rows): #{fmt(raw, :us)}, so the library adds " <>
              "#{fmt(lib - raw, :us)}",
          beam_detail:
            "median #{fmt(beam, :us)}, p99 #{fmt(get.("beam", "p99"), :us)} " <>
              "(DynamicSupervisor.start_child + Registry, local)",
          ratio: lib / beam,
          target: @target,
          verdict: "info",
          raw: %{
            lib: Map.new(~w(median p99 mean repmed_min repmed_max), &{&1, get.("lib", &1)}),
            spec: get.("spec", "median"),
            backend: raw,
            beam: Map.new(~w(median p99 mean), &{&1, get.("beam", &1)})
          }
        )
      else
        B.na(case_name, @target, "bench/lib_start.exs (status #{rc}): " <> String.slice(text, -300, 300))
      end
    end
  end
end
