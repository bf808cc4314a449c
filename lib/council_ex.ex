defmodule CouncilEx do
  @moduledoc """
  Multi-model LLM councils: several members answer an input round by round
  (independent answers, peer review, votes, iterations) and an optional
  chair synthesises the final answer.

  Runs are served by a C node (`priv/council_node`) that the library starts
  and supervises (`CouncilEx.Node`); each run is a process of that node,
  driven from here through Erlang distribution. With `config :council_ex,
  backend: :nif` the same C core is loaded into this VM instead
  (`CouncilEx.Backend`, `CouncilEx.Nif`): no second process and no
  distribution, the same API, and each run is a small local process.

      defmodule MyApp.Triage do
        use CouncilEx

        member :a, provider: :mock, latency_ms: 30, chunks: 3
        member :b, provider: :mock, latency_ms: 60
        member :c, provider: :mock
        round :independent_analysis
        round :anonymized_peer_review
        round :vote
        chair :a
      end

      {:ok, result} = CouncilEx.run(MyApp.Triage, "Which plan is safest?")
      result.final

      # or, watching the events as they happen:
      {:ok, pid} = CouncilEx.start(MyApp.Triage, "input", subscribe: true)
      receive do
        {:run_completed, _run_id, result} -> result
      end

  See `CouncilEx.DSL` for the council DSL, `CouncilEx.DynamicCouncil` for
  councils built at run time, `CouncilEx.RunServer` for registries and
  state, `CouncilEx.PubSub` for the events and `CouncilEx.Supervisor` for
  grouping runs.
  """

  alias CouncilEx.{Backend, PubSub.Relay, RunIndex, RunServer, Spec, Wire}

  @typedoc "The curated state of a run (see `CouncilEx.RunServer.state/2`)."
  @type run_summary :: RunServer.run_summary()

  @typedoc "A council: a module using `use CouncilEx`, or a spec."
  @type council :: module | Spec.t()

  @typedoc """
  A run result: the final answer, each round's result (its members'
  results with their statuses, see docs/protocol.md; a failed member's
  `error` a `%CouncilEx.Error{}`), the run's errors (`%CouncilEx.Error{}`),
  and the tokens the run used (`usage`, see `CouncilEx.PubSub` for the
  maps).
  """
  @type result :: %{
          required(:final) => binary | nil,
          required(:rounds) => [map],
          required(:errors) => [CouncilEx.Error.t()],
          optional(:usage) => %{
            input_tokens: non_neg_integer,
            output_tokens: non_neg_integer,
            cost: float | nil
          }
        }

  @typedoc "Options of `start/3`, `start_link/3` and `run/3`."
  @type start_option ::
          {:run_id, binary}
          | {:registry, atom | binary}
          | {:user_opts, keyword}
          | {:callers, [pid]}
          | {:subscribe, boolean}
          | {:placement, :hash | :least_loaded}
          | {:verbose, boolean | :debug}
          | {:verbose_io, IO.device()}
          | {:timeout, timeout}

  @start_keys [
    :run_id,
    :registry,
    :user_opts,
    :callers,
    :subscribe,
    :placement,
    :verbose,
    :verbose_io
  ]

  @doc false
  defmacro __using__(opts) do
    quote do
      use CouncilEx.DSL, unquote(opts)
    end
  end

  @doc """
  Starts a run of `council` on `input`, not linked to the caller.

  Options: `:run_id` (default: generated), `:registry` (default
  `CouncilEx.RunServer.default_registry/0`), `:user_opts` (a keyword list,
  default `[]`, handed whole to every Elixir-module member; the run reads
  `:verbose`, `:retry` and `:member_timeout_ms` from it, see
  `CouncilEx.RunServer.start/1`), `verbose: true | :debug` (or in
  `:user_opts`: the run's events logged, `CouncilEx.Verbose`; `:verbose_io`
  writes them to an IO device instead of `Logger`),
  `:callers` (default: the caller and its `$callers`), `subscribe: true`
  (subscribes the caller before the run starts, so it receives every event;
  see `CouncilEx.PubSub`; a start that fails, e.g. with
  `{:error, {:already_started, pid}}`, delivers no event), `placement:
  :least_loaded` (with a pool of C nodes, the run goes to the node with
  the fewest live runs rather than to its run id's node; see
  `CouncilEx.Pool`). With `subscribe: true`,
  when this node's relay (`CouncilEx.PubSub.Relay`) is not running (e.g.
  it is restarting) or exits during the start, the start returns
  `{:error, {:relay_down, reason}}` (`reason`: the relay call's exit
  reason, e.g. `:noproc`) instead of exiting the caller, and leaves no run
  behind (a run started meanwhile is cancelled).

  Returns `{:ok, pid}` or `{:error, reason}` (as `GenServer.on_start()`:
  `{:error, {:already_started, pid}}` when a running run has this run id,
  `pid` being that run's; the other reasons are
  `CouncilEx.RunServer.start/1`'s); bad arguments raise
  `ArgumentError` before anything is sent to the C node. An invalid
  council gives `{:error, {:invalid_council, errors}}`, `errors` as
  `validate/1` gives them, before any run exists: what the library checks
  (`CouncilEx.Spec.check/1`, e.g. a `%CouncilEx.Spec{}` built by hand) it
  refuses without contacting the C node; what only the core checks (e.g. a
  round's `failure_mode`), the core refuses before it makes the run.
  """
  @spec start(council, term, [start_option]) :: {:ok, pid} | {:error, term}
  def start(council, input, opts \\ []) do
    __start__(council, input, opts, &RunServer.start_checked(:start, &1))
  end

  @doc """
  Like `start/3` and links the run to the caller: the caller's exit cancels
  the run, and the run's exit (`{:shutdown, _}` on failure or cancel,
  `:noconnection` when the C node is lost) reaches the caller.
  """
  @spec start_link(council, term, [start_option]) :: {:ok, pid} | {:error, term}
  def start_link(council, input, opts \\ []) do
    __start__(council, input, opts, &RunServer.start_checked(:start_link, &1))
  end

  @doc """
  Runs `council` on `input` and waits for the result: `start_link/3` then
  await (option `:timeout`, default `:infinity`; on timeout the run is
  cancelled and `{:error, :timeout}` returned).

  The run is linked, for its duration, to a small helper process linked to
  the caller: the caller's exit cancels the run, while a failed run's exit
  signal does not kill the caller (the failure comes back as a value). The
  helper takes the result from the run's terminal event, so a run that ends
  before it could be awaited still gives its result.

  Returns

    * `{:ok, result}` when the run completed;
    * `{:error, {:failed, errors, result}}` when it failed;
    * `{:error, {:cancelled, result}}` when it was cancelled: through
      `cancel/1`, `GenServer.stop/2` or an exit signal sent to its pid, or
      by a clean stop (SIGTERM) of the C node, which cancels every run
      before it exits;
    * `{:error, :noconnection}` when the C node was lost (killed, or the
      connection to it broke) before the run ended;
    * `{:error, {:exit, reason}}` when the run's process exited with
      `reason` (e.g. `:shutdown` as the C node stops) and its outcome could
      not be read: neither its terminal event nor the C node's retained
      outcome was available;
    * `{:error, :timeout}` when `:timeout` passed first (the run is
      cancelled), or any error of `start_link/3` (e.g.
      `{:error, {:already_started, pid}}`, `{:error, {:invalid_council,
      errors}}`, `{:error, {:relay_down, reason}}` when this node's event
      relay is not running or exits during the start: no run is left
      running then).

  `run/3` always returns once the run's process has ended: it never waits
  for an event that cannot come.
  """
  @spec run(council, term, [start_option]) ::
          {:ok, result}
          | {:error,
             {:failed, [CouncilEx.Error.t()], result}
             | {:cancelled, result}
             | {:exit, term}
             | :noconnection
             | :timeout
             | term}
  def run(council, input, opts \\ []) do
    {timeout, opts} = Keyword.pop(opts, :timeout, :infinity)
    caller = self()
    ref = make_ref()

    starter = fn run_opts ->
      keeper = spawn_link(fn -> keeper_init(caller, ref, run_opts) end)

      receive do
        {^ref, ^keeper, {:ok, _} = reply} ->
          Process.put(ref, keeper)
          reply

        {^ref, ^keeper, error} ->
          Backend.unlink_flush(keeper)
          error

        # (only seen by a caller that traps exits; the keeper answers
        # before it ends, so this is a keeper that crashed)
        {:EXIT, ^keeper, reason} ->
          {:error, {:exit, reason}}
      end
    end

    case __start__(council, input, opts, starter) do
      {:ok, pid} ->
        keeper = Process.delete(ref)

        receive do
          {^ref, :result, result} ->
            Backend.unlink_flush(keeper)
            result

          # A keeper that crashed (seen when trapping exits); its run,
          # linked to it, got the exit signal too.
          {:EXIT, ^keeper, reason} ->
            cancel(pid)
            {:error, {:exit, reason}}
        after
          timeout ->
            Backend.unlink_flush(keeper)
            Process.exit(keeper, :kill)
            cancel(pid)
            flush_result(ref)
            {:error, :timeout}
        end

      error ->
        error
    end
  end

  @doc """
  Waits for a run to end, by pid or by run id (in the default registry):
  `{:ok, result}` on completion, `{:error, {:failed, errors, result}}`,
  `{:error, {:cancelled, result}}`; `{:error, :timeout}` when `timeout`
  passes first, `{:error, :noconnection}` when the C node was lost.

  A run that has already ended still gives its outcome while the C node
  retains it (5 minutes after its end by default, see
  `CouncilEx.RunServer.state/2`): by run id always, by pid when the run was
  started from this VM (the library knows its run id; see
  `CouncilEx.RunIndex`). Otherwise a pid whose run has ended gives
  `{:error, :noproc}`, and an unknown run id `{:error, :not_found}`. Any
  exit of the run's process (`:normal`, `{:shutdown, _}`, a
  `GenServer.stop/2` reason, a linked caller's reason such as `:killed`)
  counts as the run's end here; only a lost C node (`:noconnection`) and
  the timeout are errors of their own.
  """
  @spec await(pid | binary, timeout) :: {:ok, result} | {:error, term}
  def await(pid_or_run_id, timeout \\ :infinity)

  def await(pid, timeout) when is_pid(pid) do
    case await_pid(pid, timeout) do
      {:error, :noproc} = noproc ->
        case RunIndex.lookup(pid) do
          {:ok, {registry, run_id}} -> ended_outcome(registry, run_id, noproc)
          :error -> noproc
        end

      other ->
        other
    end
  end

  def await(run_id, timeout) when is_binary(run_id) do
    registry = Wire.registry_name(RunServer.default_registry())

    case outcome(registry, run_id) do
      {:error, :running} ->
        case Backend.call({:whereis, registry, run_id}) do
          {:ok, pid} ->
            case await_pid(pid, timeout) do
              {:error, :noproc} -> ended_outcome(registry, run_id, {:error, :not_found})
              other -> other
            end

          # It ended in between (or its retention did).
          {:error, reason} when reason in [:unknown_run, :runner_dead] ->
            ended_outcome(registry, run_id, {:error, :not_found})

          other ->
            other
        end

      other ->
        other
    end
  end

  # A run that ends between the call's monitor and its request (or while
  # the call waits) exits the call with its own reason, as a GenServer
  # would: :normal, {:shutdown, _}, a GenServer.stop reason, a linked
  # caller's reason (e.g. :killed). Any of them is a run that has ended,
  # like :noproc, and its outcome is kept; only a lost node and a timeout
  # are not (see ended_or/1).
  defp await_pid(pid, timeout) do
    pid |> GenServer.call(:await, timeout) |> Wire.reply()
  catch
    :exit, {reason, _} -> {:error, ended_or(reason)}
  end

  # The exit reason of a call to a run pid: :noconnection (node lost),
  # :timeout, or :noproc for every other reason (the run has ended).
  defp ended_or(reason) do
    case CouncilEx.Node.exit_reason(reason) do
      :noconnection -> :noconnection
      :timeout -> :timeout
      _ended -> :noproc
    end
  end

  # The outcome the C node retains for a run: as await's, or
  # `{:error, :running}`, `{:error, :not_found}`.
  defp outcome(registry, run_id) do
    Wire.reply(Backend.call({:result, registry, run_id}))
  end

  # The outcome of a run whose process is gone; `gone` when the C node no
  # longer knows it.
  defp ended_outcome(registry, run_id, gone) do
    case outcome(registry, run_id) do
      {:error, reason} when reason in [:not_found, :running] -> gone
      other -> other
    end
  end

  @doc """
  Cancels a run, by pid or by run id (in the default registry). Idempotent:
  an ended run answers `:ok` (by pid: whatever reason its process exited
  with). `{:error, :not_found}` for an unknown run id; by pid
  `{:error, :noconnection}` when the C node was lost, `{:error, :timeout}`.
  """
  @spec cancel(pid | binary) :: :ok | {:error, term}
  def cancel(pid) when is_pid(pid) do
    case GenServer.call(pid, :cancel) do
      :ok -> :ok
      other -> other
    end
  catch
    :exit, {reason, _} ->
      case ended_or(reason) do
        # ended before (or while) the request reached it, whatever its
        # exit reason
        :noproc -> :ok
        other -> {:error, other}
      end
  end

  def cancel(run_id) when is_binary(run_id) do
    Backend.call({:cancel, Wire.registry_name(RunServer.default_registry()), run_id})
  end

  @typedoc """
  One reason a council is invalid (`validate/1`, and
  `{:error, {:invalid_council, errors}}` from `start/3`, `start_link/3`,
  `run/3`): `path` names the field as the core writes it (`"rounds[2].type"`,
  `"members[0].options.argv"`, `"limits.max_attempts"`; `"spec"` or `"$"`
  for the whole document), `message` says what is wrong, `code` is one of
  `t:validation_code/0`.
  """
  @type validation_error :: %{path: binary, code: validation_code, message: binary}

  @typedoc """
  What kind of problem a `t:validation_error/0` is. From the core's error
  kinds (`council.h`):

    * `:invalid_spec` - a rule of the spec format is broken
      (`COUNCIL_ESPEC`; docs/spec-format.md);
    * `:unknown_provider` - a member names a provider the core does not
      have (`COUNCIL_EPROVIDER`; path `"members[i].provider"`);
    * `:too_big` - the spec's JSON is over the C node's `--max-spec-bytes`
      (`COUNCIL_ETOOBIG`, which the core answers `:request_too_large`;
      path `"spec"`; `validate/1` only: a start that big gets
      `{:error, :request_too_large}`, as any request over the limits);
    * `:parse_error` - the spec is not JSON (`COUNCIL_EPARSE`; path `"$"`);

  and from the library:

    * `:provider_config` - `config :council_ex, :providers` cannot serve a
      model member (`CouncilEx.Providers`; path `"providers.<provider>"`);
    * `:not_a_council` - the argument is neither a council module nor a
      `%CouncilEx.Spec{}` (path `"$"`);
    * `:unavailable` - `validate/1` could not ask the core (its C node is
      not up; path `"$"`).
  """
  @type validation_code ::
          :invalid_spec
          | :unknown_provider
          | :too_big
          | :parse_error
          | :provider_config
          | :not_a_council
          | :unavailable

  @doc """
  Checks a council (a module with `use CouncilEx` or a `%CouncilEx.Spec{}`)
  without starting anything: `:ok`, or `{:error, errors}` (see
  `t:validation_error/0`).

  The rules are the core's: the spec is checked by the library as
  `start/3` checks it (`CouncilEx.Spec.check/1`, the providers'
  configuration), then by the core itself (the `{:validate, spec}` request
  of the C node or the NIF, docs/protocol.md), which answers as it would
  answer a start with this spec. So a council that passes here is not
  refused for its spec when it starts.

      iex> spec = CouncilEx.Spec.new!(id: "v", members: [[id: :a, provider: :mock]],
      ...>                            rounds: [[type: :vote, failure_mode: "sometimes"]])
      iex> CouncilEx.validate(spec)
      {:error, [%{path: "rounds[0].options.failure_mode", code: :invalid_spec,
                  message: ~s(must be "continue" or "fail_fast")}]}
  """
  @spec validate(council) :: :ok | {:error, [validation_error]}
  def validate(council) do
    with {:ok, {_name, spec}} <- council_of(council),
         {:ok, checked} <- RunServer.check_spec(spec: spec),
         :ok <- core_validate(Keyword.fetch!(checked, :spec)) do
      :ok
    else
      {:error, reason} -> {:error, validation_errors(reason)}
    end
  end

  defp core_validate(spec) do
    case Backend.call({:validate, Spec.to_json(spec)}) do
      :ok -> :ok
      {:error, {:invalid_spec, _, _}} = refused -> refused
      # the request is the spec alone: it is the spec that is too large
      {:error, :request_too_large} -> {:error, :too_big}
      {:error, reason} -> {:error, {:unavailable, reason}}
    end
  rescue
    # an option value with no JSON form
    e in ArgumentError -> {:error, {:invalid_spec, "spec", Exception.message(e)}}
  end

  defp council_of(council) do
    {:ok, council!(council)}
  rescue
    e in ArgumentError -> {:error, {:not_a_council, Exception.message(e)}}
  end

  @doc false
  # A start's or validate's refusal of a council as a list of
  # validation_error maps; other reasons are not about the council (nil).
  @spec validation_errors(term) :: [validation_error] | nil
  def validation_errors({:invalid_spec, path, message}),
    do: [%{path: path, code: spec_code(path, message), message: message}]

  def validation_errors({:provider_config, provider, message}),
    do: [%{path: "providers.#{provider}", code: :provider_config, message: message}]

  def validation_errors(:too_big),
    do: [%{path: "spec", code: :too_big, message: "larger than the core's max_spec_bytes"}]

  def validation_errors({:not_a_council, message}),
    do: [%{path: "$", code: :not_a_council, message: message}]

  def validation_errors({:unavailable, reason}),
    do: [
      %{path: "$", code: :unavailable, message: "the core could not be asked: #{inspect(reason)}"}
    ]

  def validation_errors(_other), do: nil

  # The core's error kind of an {:invalid_spec, path, message} refusal: the
  # C node and the NIF send path and message only, and say which kind by
  # where they point (council_spec_error: "$" for a parse error,
  # "members[i].provider" for an unknown provider).
  defp spec_code("$", _message), do: :parse_error

  defp spec_code(path, _message) do
    if String.ends_with?(path, ".provider"), do: :unknown_provider, else: :invalid_spec
  end

  @doc """
  The name of the C node serving runs (with a pool, the first one up: see
  `CouncilEx.Node`; waits for it to be up), or nil if it
  is unavailable, or when runs are served by the NIF (`backend: :nif`, see
  `CouncilEx.Backend`).
  """
  @spec node() :: node | nil
  def node do
    with false <- Backend.nif?(),
         {:ok, node} <- CouncilEx.Node.await() do
      node
    else
      _ -> nil
    end
  end

  @doc "A fresh run id: 16 random bytes, URL-safe base64 without padding."
  @spec generate_run_id() :: binary
  def generate_run_id, do: :crypto.strong_rand_bytes(16) |> Base.url_encode64(padding: false)

  # -------------------------------------------------------------- internals

  @doc false
  # Validates, subscribes the caller when asked, and starts with `starter`.
  @spec __start__(council, term, keyword, (keyword -> {:ok, pid} | {:error, term})) ::
          {:ok, pid} | {:error, term}
  def __start__(council, input, opts, starter) do
    {run_opts, known} = prepare!(council, input, opts)

    # An invalid spec is refused before the relay or the C node hear of the
    # run; what only the core checks, it refuses before it makes the run.
    # Both come back as {:invalid_council, errors}.
    case RunServer.check_spec(run_opts, known) do
      {:ok, run_opts} ->
        if Keyword.get(opts, :subscribe, false),
          do: start_subscribed(run_opts, self(), starter),
          else: starter.(run_opts)

      error ->
        error
    end
    |> invalid_council()
  end

  defp invalid_council({:error, reason} = error) do
    case validation_errors(reason) do
      nil -> error
      errors -> {:error, {:invalid_council, errors}}
    end
  end

  defp invalid_council(other), do: other

  # Starts with `pid` subscribed to the run's topic. The relay's
  # subscription at the C node, when it has none for the topic yet, rides
  # on the start request (`{relay, :batched}` in its :subscribe list): the C
  # node subscribes it before the run begins, so no event is missed, and a
  # start that fails (e.g. {:already_started, pid}) subscribes nothing.
  #
  # With backend :nif there is no relay: `{pid, :lib}` in the :subscribe
  # list subscribes pid itself, before the run begins, to events in the
  # relay's form (round names as atoms); a start that fails subscribes
  # nothing.
  defp start_subscribed(run_opts, pid, starter) do
    if Backend.nif?() do
      starter.(Keyword.update(run_opts, :subscribe, [{pid, :lib}], &Enum.uniq(&1 ++ [{pid, :lib}])))
    else
      topic = Wire.topic(Keyword.fetch!(run_opts, :run_id))

      Relay.start_subscribed(topic, pid, fn entries ->
        starter.(Keyword.update(run_opts, :subscribe, entries, &Enum.uniq(&1 ++ entries)))
      end)
    end
  end

  defp prepare!(council, input, opts) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end

    for {k, _} <- opts, k not in @start_keys do
      raise ArgumentError,
            "unknown option #{inspect(k)} (known: #{inspect(@start_keys ++ [:timeout])})"
    end

    case Keyword.get(opts, :subscribe, false) do
      b when is_boolean(b) -> :ok
      other -> raise ArgumentError, ":subscribe must be a boolean, got: #{inspect(other)}"
    end

    RunServer.placement!(opts)

    {name, spec} = council!(council)
    known = Spec.checked_json(spec)

    # With a pool of C nodes, a least-loaded run without an id of its own
    # gets one that hashes to the least-loaded node (CouncilEx.Pool).
    {run_id, opts} =
      case Keyword.get(opts, :run_id) do
        nil -> {CouncilEx.Pool.new_run_id(opts[:placement]), Keyword.delete(opts, :placement)}
        id -> {id, opts}
      end

    run_opts =
      [
        run_id: run_id,
        council: name,
        spec: spec,
        input: input,
        callers: Keyword.get(opts, :callers, [self() | Process.get(:"$callers", [])]),
        user_opts: Keyword.get(opts, :user_opts, [])
      ] ++ Keyword.take(opts, [:registry, :placement, :verbose, :verbose_io])

    run_opts = RunServer.validate_options!(run_opts)

    # What is known of the spec before this start (Spec.checked_json/1,
    # by the whole spec: a module recompiled or reloaded with another spec,
    # a struct changed by hand, each is another key): checked and encoded
    # (the start does neither again), checked (check_spec/2 does not check
    # again), or nothing. RunServer.validate!/1's last check, the spec's
    # JSON encoding (an option value with no JSON form raises
    # ArgumentError), is done here when the JSON is not known; it is sent
    # as it is when checking leaves the spec as it was.
    case known do
      {:ok, json} -> {run_opts, checked: {:ok, spec}, json: {spec, json}}
      {:checked, result} -> {run_opts, checked: result, json: {spec, Spec.to_json(spec)}}
      :error -> {run_opts, json: {spec, Spec.to_json(spec)}}
    end
  end

  defp council!(%Spec{} = spec), do: {spec.id, spec}

  defp council!(module) when is_atom(module) do
    if Code.ensure_loaded?(module) and function_exported?(module, :__council__, 0) do
      {module, module.__council__()}
    else
      raise ArgumentError,
            "#{inspect(module)} is not a council (a module with `use CouncilEx`, or a %CouncilEx.Spec{})"
    end
  end

  defp council!(other) do
    raise ArgumentError,
          "expected a council module or a %CouncilEx.Spec{}, got: #{inspect(other)}"
  end

  # How long run/3's helper waits, after its run's process has exited, for
  # the terminal event that is still on its way through the relay (the C
  # node sends it right after the exit signal when a run is killed). Only
  # a bound: when it passes, the outcome is read from the C node instead.
  @exit_grace_ms 5_000

  # The helper of run/3: subscribed to the run's events, linked to both the
  # caller and the run.
  defp keeper_init(caller, ref, run_opts) do
    Process.flag(:trap_exit, true)
    run_id = Keyword.fetch!(run_opts, :run_id)
    registry = Wire.registry_name(Keyword.get(run_opts, :registry, RunServer.default_registry()))

    reply =
      try do
        start_subscribed(run_opts, self(), &RunServer.start_checked(:start_link, &1))
      catch
        # Never exit the caller over a failed start: unlinked first, it
        # gets the error; a run linked to this process (if one started)
        # is cancelled by this process's abnormal exit.
        kind, reason ->
          Process.unlink(caller)
          send(caller, {ref, self(), {:error, {:exit, exit_of(kind, reason)}}})
          exit({:shutdown, :start_failed})
      end

    send(caller, {ref, self(), reply})

    case reply do
      {:ok, pid} -> send(caller, {ref, :result, keep(caller, {registry, run_id}, pid)})
      _ -> :ok
    end
  end

  # The run's outcome, from its terminal event; from the C node when the
  # events cannot tell it.
  defp keep(caller, {_registry, run_id} = run, pid) do
    topic = Wire.topic(run_id)

    receive do
      {:run_completed, ^run_id, result} ->
        {:ok, result}

      {:run_failed, ^run_id, errors, result} ->
        {:error, {:failed, errors, result}}

      {:run_cancelled, ^run_id, result} ->
        {:error, {:cancelled, result}}

      {:council_ex_overflow, ^topic, _} ->
        # Cut off from the events: fall back to awaiting the run itself.
        overflowed(caller, pid)

      {:council_ex_down, ^topic, reason} ->
        {:error, reason}

      {:EXIT, ^caller, reason} ->
        exit(reason)

      {:EXIT, ^pid, :noconnection} ->
        {:error, :noconnection}

      {:EXIT, ^pid, reason} ->
        exited(caller, run, pid, reason)

      _ ->
        keep(caller, run, pid)
    end
  end

  # Awaits the run from a linked helper, so that this process keeps
  # reacting to the caller's exit meanwhile (which cancels the run: this
  # process exits with the caller's reason, and the run is linked to it).
  defp overflowed(caller, pid) do
    keeper = self()
    tag = make_ref()
    spawn_link(fn -> send(keeper, {tag, await(pid)}) end)

    receive do
      {^tag, result} -> result
      {:EXIT, ^caller, reason} -> exit(reason)
    end
  end

  # The run's process exited with `reason` (:normal on completion, the
  # shutdown or stop reason, :killed, ...) before its terminal event got
  # here. While the relay still has this process subscribed the event is on
  # its way (or the node's down notice is): wait for it, within a grace
  # period. Otherwise (the relay lost the subscription, e.g. it restarted)
  # nothing more will come: read the outcome the C node retains.
  defp exited(caller, {_registry, run_id} = run, pid, reason) do
    topic = Wire.topic(run_id)

    # With the NIF, a run whose pid exited first (stopped, killed, a
    # linked process's exit) is cancelled by the core, and the terminal
    # event follows: this process stays subscribed until then.
    grace =
      try do
        if Backend.nif?() or self() in Relay.subscribers(topic), do: @exit_grace_ms, else: 0
      catch
        :exit, _ -> 0
      end

    receive do
      {:run_completed, ^run_id, result} -> {:ok, result}
      {:run_failed, ^run_id, errors, result} -> {:error, {:failed, errors, result}}
      {:run_cancelled, ^run_id, result} -> {:error, {:cancelled, result}}
      {:council_ex_overflow, ^topic, _} -> retained(run, pid, reason)
      {:council_ex_down, ^topic, _} -> {:error, {:exit, reason}}
      {:EXIT, ^caller, caller_reason} -> exit(caller_reason)
    after
      grace -> retained(run, pid, reason)
    end
  end

  # The outcome the run's C node retains, asked of that node only while
  # it is still connected (a node that stops or was lost has none to give,
  # and a new node knows nothing of the run), or of the NIF:
  # `{:error, {:exit, reason}}` when it cannot be read.
  defp retained({registry, run_id}, pid, reason, tries \\ 20) do
    reply =
      if Backend.nif?(),
        do: Backend.call({:result, registry, run_id}, 5_000),
        else: retained_at(node(pid), registry, run_id)

    case Wire.reply(reply) do
      {:ok, _} = ok ->
        ok

      {:error, {:failed, _, _}} = failed ->
        failed

      {:error, {:cancelled, _}} = cancelled ->
        cancelled

      # A process killed outright exits before its run has ended.
      {:error, :running} when tries > 1 ->
        Process.sleep(50)
        retained({registry, run_id}, pid, reason, tries - 1)

      _ ->
        {:error, {:exit, reason}}
    end
  end

  defp retained_at(node, registry, run_id) do
    if node in Node.list(:connected) do
      try do
        GenServer.call({CouncilEx.Node.service_name(), node}, {:result, registry, run_id}, 5_000)
      catch
        :exit, _ -> :unreadable
      end
    else
      :unreadable
    end
  end

  defp exit_of(:exit, reason), do: reason
  defp exit_of(:throw, value), do: {:nocatch, value}
  defp exit_of(:error, reason), do: reason

  defp flush_result(ref) do
    receive do
      {^ref, :result, _} -> :ok
    after
      0 -> :ok
    end
  end
end
