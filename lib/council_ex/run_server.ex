defmodule CouncilEx.RunServer do
  @moduledoc """
  One council run. The run server itself is a process of the C node: the
  functions here validate options, send them to the node's `:council_ex`
  service and return the run's pid, which behaves like a GenServer (calls,
  links, monitors, `GenServer.stop/2`). With `backend: :nif`
  (`CouncilEx.Backend`) the same requests go to the core loaded into this
  VM, and the run's pid is a local process (`CouncilEx.Nif.Run`) that
  behaves the same way.

      {:ok, pid} =
        CouncilEx.RunServer.start_link(
          run_id: "run-1",
          council: MyApp.Triage,
          spec: MyApp.Triage.__council__(),
          input: "Which option is best?"
        )

      {:ok, ^pid} = CouncilEx.RunServer.whereis("run-1")
      {:ok, %{status: :running}} = CouncilEx.RunServer.state("run-1")
      GenServer.call(CouncilEx.RunServer.via("run-1"), :state)

  Registries: runs are registered under their run id in a registry of the
  C node. The default registry is `CouncilEx.Runner.Registry`, overridable
  with `config :council_ex, :runner_registry, MyApp.RunReg`; the
  `:registry` option names another one, and every registry is its own
  namespace (the same run id may live in two registries).
  """

  alias CouncilEx.{Backend, MemberServer, Providers, RunIndex, Spec, Verbose, Wire}

  @typedoc """
  The curated state of a run (SPEC section 3): `started_at` is a `DateTime`
  (UTC), `current_round` the round being run (its name an atom when one
  exists) or nil.
  """
  @type run_summary :: %{
          run_id: binary,
          council: module | binary,
          registry: binary,
          status: :pending | :running | :completed | :failed | :cancelled,
          current_round: nil | %{name: atom | binary, idx: non_neg_integer},
          rounds_completed: non_neg_integer,
          started_at: DateTime.t()
        }

  @typedoc "Options of `start/1` and `start_link/1`."
  @type option ::
          {:run_id, binary | nil}
          | {:council, module | binary}
          | {:spec, Spec.t()}
          | {:input, term}
          | {:user_opts, keyword | term}
          | {:callers, [pid]}
          | {:registry, atom | binary}
          | {:subscribe, [pid | {pid, :tagged} | {pid, :batched}]}
          | {:placement, :hash | :least_loaded}
          | {:verbose, boolean | :debug}
          | {:verbose_io, IO.device()}

  @required [:run_id, :council, :spec, :input]
  @optional [:user_opts, :callers, :registry, :subscribe, :placement, :verbose, :verbose_io]

  @doc """
  A child spec for supervisors: `restart: :temporary` (a finished run is
  not restarted), id `{CouncilEx.RunServer, run_id}`.
  """
  @spec child_spec([option]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.get(opts, :run_id)},
      start: {__MODULE__, :start_link, [opts]},
      restart: :temporary,
      type: :worker
    }
  end

  # the core's default registry name, as the module-like atom users write
  @default_registry String.to_atom("Elixir." <> CouncilEx.Schema.default_registry())

  @doc """
  The default registry: `config :council_ex, :runner_registry` or
  `CouncilEx.Runner.Registry`.
  """
  @spec default_registry() :: atom | binary
  def default_registry,
    do: Application.get_env(:council_ex, :runner_registry, @default_registry)

  @doc """
  Starts a run, not linked to the caller.

  Required options: `:run_id` (a binary, or `nil` to let the C node
  generate one), `:council` (a module or binary), `:spec` (a
  `%CouncilEx.Spec{}`), `:input` (any term). Optional: `:user_opts` (a
  keyword list, default `[]`; handed whole to every Elixir-module member,
  and the run reads from it `retry: {max_attempts, base_ms}` and
  `member_timeout_ms:`, see below; another term is handed on as it is),
  `:callers` (pids recorded as `$callers` in the tasks
  that run Elixir-module members and tools; default: the caller and its
  own `$callers`, as a `Task` inherits them), `:registry`, `:subscribe` (pids subscribed
  to the run's topic before it starts; `{pid, :tagged}` for delivery as
  `{:council_ex_event, topic, event}`, `{pid, :batched}` (C node only) as
  `{:council_ex_events, topic, [event, ...]}`, see docs/protocol.md; at
  most 64),
  `:placement` (`:hash`, the default, or `:least_loaded`: which node of a
  pool of C nodes takes the run, see `CouncilEx.Pool`), `verbose: true |
  :debug` (also read from a keyword `:user_opts`: the run's events logged
  by a `CouncilEx.Verbose` tracer, subscribed by the start request itself)
  and `:verbose_io` (an IO device for the tracer's lines instead of
  `Logger`).

  Missing or bad options raise `ArgumentError` before anything is sent.
  The spec is checked here too (`CouncilEx.Spec.check/1`, which a spec built
  by hand has not been through): an invalid one gives
  `{:error, {:invalid_spec, field, message}}`, the shape of the C node's own
  refusal, without contacting the C node. Model members get their
  provider's configured defaults and keys here
  (`CouncilEx.Providers.resolve/2`; a model member without a `model` is
  `{:error, {:invalid_spec, "members[i].options.model", _}}`).

  Retries and timeouts: a member call is tried up to `max_attempts`
  times, waiting `base_ms * 2^(n-1)` (plus up to a quarter at random)
  before attempt n+1, for transient failures only; each attempt has the
  member timeout. Which policy a member gets, first found: its own options
  (`retry: {max_attempts, base_ms}`, `timeout_ms:`), the run's
  `:user_opts` (`retry:`, `member_timeout_ms:`), the council's `limits`,
  `config :council_ex, :default_retry` (`{max_attempts, base_ms}`), the
  core's defaults (one attempt; the C node's `--member-timeout-ms`, 60 s).

  A run whose spec has Elixir-module members, tools with Elixir function
  handlers or Elixir routers (`CouncilEx.Spec.beam_members/1`,
  `CouncilEx.Spec.beam_tools/1`, `CouncilEx.Spec.beam_routers/1`) gets a
  `CouncilEx.MemberServer` that serves them; a router named by a name
  nobody registered (`CouncilEx.Router.register/2`) is
  `{:error, {:invalid_spec, "rounds[i].options.router", _}}`.
  Returns `{:ok, pid}` or `{:error, reason}` (`{:already_started, pid}`
  with the pid of the running run that has this run id, as
  `GenServer.on_start()` gives it; `:run_id_retained` when the run id is
  that of a run that has ended and is still retained (readable through
  `state/2`); `:limit`, `{:invalid_spec, field, message}`,
  `{:provider_config, provider, message}`, `:noconnection`,
  `:unavailable`, `:timeout` when the C node does not answer within 15 s:
  it may still make the run, which is then found by id; `start_link/1`
  then asks that node for the id and unlinks and cancels a run it finds
  linked to the caller, see `CouncilEx.Pool`).
  """
  @spec start([option]) :: {:ok, pid} | {:error, term}
  def start(opts), do: do_start(:start, opts)

  @doc """
  Like `start/1`, and links the run to the caller (the link exists before
  `{:ok, pid}` is returned). The caller's exit cancels the run; a run that
  fails or is cancelled exits with `{:shutdown, _}` (killing a caller that
  does not trap exits), a completed run with `:normal`; when the C node is
  lost the caller gets an exit `:noconnection`.
  """
  @spec start_link([option]) :: {:ok, pid} | {:error, term}
  def start_link(opts), do: do_start(:start_link, opts)

  @doc false
  # start/1 or start_link/1 (how) for options that CouncilEx.__start__/4
  # has validated (validate_options!/1, the spec's JSON encoding) and
  # checked (check_spec/2) already: the same request without both again
  # (they were a third of a start's time in the library).
  @spec start_checked(:start | :start_link, [option]) :: {:ok, pid} | {:error, term}
  def start_checked(how, opts) when how in [:start, :start_link], do: request_start(how, opts)

  @doc false
  # child_spec/1 for such options (CouncilEx.Supervisor.start_link/4).
  @spec checked_child_spec([option]) :: Supervisor.child_spec()
  def checked_child_spec(opts),
    do: %{child_spec(opts) | start: {__MODULE__, :start_checked, [:start_link, opts]}}

  @doc """
  The pid of a running run: `{:ok, pid}`; `{:error, :unknown_run}` when
  nothing is registered under `run_id`, which is also the case from the
  moment a run ends (its summary stays readable through `state/2` for the
  retention window); `{:error, :runner_dead}` for a stale entry whose
  process is gone without the registry having been told (rare: a run
  started from this VM on a C node that was lost, for the retention
  window, see `CouncilEx.RunIndex`). Option: `:registry`.
  """
  @spec whereis(binary, keyword) ::
          {:ok, pid} | {:error, :unknown_run | :runner_dead | :noconnection | :unavailable}
  def whereis(run_id, opts \\ []) when is_binary(run_id) do
    registry = Wire.registry_name(registry!(opts))

    case Backend.call({:whereis, registry, run_id}) do
      # a run of this VM lost with its node, which the node serving now
      # does not know (one that does, e.g. the same node reconnected,
      # knows it ended)
      {:error, :unknown_run} = unknown ->
        if RunIndex.lost?(registry, run_id) and
             Backend.call({:state, registry, run_id}) == {:error, :not_found},
           do: {:error, :runner_dead},
           else: unknown

      other ->
        other
    end
  end

  @doc "The run id of a run pid."
  @spec run_id(pid) :: binary
  def run_id(pid) when is_pid(pid), do: GenServer.call(pid, :run_id)

  @doc """
  The summary of a run by id (option `:registry`) or by pid. A finished
  run stays readable for the retention window (5 minutes by default): by
  id, and by pid when the run was started from this VM (see
  `CouncilEx.RunIndex`); `{:error, :not_found}` for an unknown id or a
  pid whose run has ended otherwise.
  """
  @spec state(binary | pid, keyword) :: {:ok, run_summary} | {:error, :not_found | term}
  def state(run, opts \\ [])

  def state(pid, _opts) when is_pid(pid) do
    reply =
      try do
        GenServer.call(pid, :state)
      catch
        :exit, {reason, _} -> {:error, CouncilEx.Node.exit_reason(reason)}
      end

    case reply do
      {:ok, summary} ->
        {:ok, Wire.summary(summary)}

      {:error, :noproc} ->
        case RunIndex.lookup(pid) do
          {:ok, {registry, run_id}} -> state(run_id, registry: registry)
          :error -> {:error, :not_found}
        end

      other ->
        other
    end
  end

  def state(run_id, opts) when is_binary(run_id) do
    registry = registry!(opts)

    case Backend.call({:state, Wire.registry_name(registry), run_id}) do
      {:ok, summary} -> {:ok, Wire.summary(summary)}
      other -> other
    end
  end

  @doc """
  A via tuple naming the run `run_id`, usable with `GenServer.call/2`,
  `GenServer.whereis/1` and `send/2`. Option `:registry`.
  """
  @spec via(binary, keyword) :: {:via, CouncilEx.Registry, {atom | binary, binary}}
  def via(run_id, opts \\ []) when is_binary(run_id) do
    {:via, CouncilEx.Registry, {registry!(opts), run_id}}
  end

  # -------------------------------------------------------------- internals

  defp do_start(how, opts) do
    opts = validate!(opts)

    case check_spec(opts) do
      {:ok, opts} -> request_start(how, opts)
      error -> error
    end
  end

  @doc false
  # The spec of validated options checked (SPEC section 9: a bad spec is
  # refused before anything is sent to the C node; a router named by a
  # name nobody registered is refused here too, so validate/1 says so) and
  # its model members given their providers' configured defaults; the options with that
  # spec, or `{:error, {:invalid_spec, field, message}}` /
  # `{:error, {:provider_config, provider, message}}`.
  @spec check_spec(keyword) ::
          {:ok, keyword}
          | {:error, {:invalid_spec, binary, binary} | {:provider_config, atom, binary}}
  def check_spec(opts), do: check_spec(opts, [])

  @doc false
  # check_spec/1 with what the caller knows already (CouncilEx.__start__/4):
  # `checked:`, Spec.check/1's result for the options' spec (not asked
  # again), and `json: {spec, json}`, `json` being Spec.to_json/1 of
  # `spec`: when the spec to send is that very spec, the options get it as
  # `:spec_json` and the start does not encode it again. The routers and
  # the providers' configuration are read on every call (they change at
  # run time), as is the tuning from the run's user_opts.
  @spec check_spec(keyword, keyword) ::
          {:ok, keyword}
          | {:error, {:invalid_spec, binary, binary} | {:provider_config, atom, binary}}
  def check_spec(opts, known) do
    checked = Keyword.get_lazy(known, :checked, fn -> Spec.check(Keyword.fetch!(opts, :spec)) end)

    with {:ok, spec} <- checked,
         {:ok, _routers} <- routers_of(spec),
         {:ok, spec} <- Providers.resolve(spec) do
      spec = tune(spec, Keyword.get(opts, :user_opts))
      opts = Keyword.put(opts, :spec, spec)

      case Keyword.get(known, :json) do
        {^spec, json} -> {:ok, Keyword.put(opts, :spec_json, json)}
        _ -> {:ok, opts}
      end
    end
  end

  # The run's retry policy and member timeout in the spec's limits, where
  # the core reads them: `:retry` and `:member_timeout_ms` of the run's
  # user_opts over the council's own limits; `config :council_ex,
  # :default_retry` where neither gives a retry policy. A member's own
  # options (`retry:`, `timeout_ms:`) win over all of these in the core.
  defp tune(%Spec{limits: limits} = spec, user_opts) do
    user = if is_list(user_opts) and Keyword.keyword?(user_opts), do: user_opts, else: []

    retry =
      Keyword.get_lazy(user, :retry, fn ->
        unless Map.has_key?(limits, :max_attempts) or Map.has_key?(limits, :backoff_ms),
          do: Application.get_env(:council_ex, :default_retry)
      end)

    limits =
      case retry do
        {max, base_ms} -> Map.merge(limits, %{max_attempts: max, backoff_ms: base_ms})
        nil -> limits
      end

    limits =
      case Keyword.get(user, :member_timeout_ms) do
        nil -> limits
        ms -> Map.put(limits, :member_timeout_ms, ms)
      end

    %{spec | limits: limits}
  end

  defp request_start(how, opts) do
    spec = Keyword.fetch!(opts, :spec)

    case routers_of(spec) do
      {:ok, routers} -> request_start(how, opts, spec, routers)
      error -> error
    end
  end

  # The spec's Elixir routers resolved (registered names looked up):
  # {:ok, ref => function or module} or the refusal of a bad spec.
  defp routers_of(spec) do
    Enum.reduce_while(Spec.beam_routers(spec), {:ok, %{}}, fn {ref, router}, {:ok, acc} ->
      case CouncilEx.Router.resolve(router) do
        {:ok, r} ->
          {:cont, {:ok, Map.put(acc, ref, r)}}

        {:error, message} ->
          path = if ref == "router", do: ref, else: router_path(ref)
          {:halt, {:error, {:invalid_spec, path, message}}}
      end
    end)
  end

  # "rounds[1].rounds[0]" -> "rounds[1].options.rounds[0].options.router"
  defp router_path(ref),
    do: String.replace(ref, "].rounds[", "].options.rounds[") <> ".options.router"

  defp request_start(how, opts, spec, routers) do
    members = Spec.beam_members(spec)
    tools = MemberServer.tools_of(spec)
    callers = Keyword.get_lazy(opts, :callers, &callers/0)

    member_server =
      if members == %{} and tools == %{} and routers == %{},
        do: nil,
        else:
          MemberServer.start_for_run!(members, callers, tools,
            routers: routers,
            input: Keyword.fetch!(opts, :input),
            user_opts: Keyword.get(opts, :user_opts)
          )

    request = %{
      # the JSON check_spec/2 knows is that of this spec (only
      # start_checked/2's options can hold it: validate!/1 refuses the key)
      spec: Keyword.get_lazy(opts, :spec_json, fn -> Spec.to_json(spec) end),
      input: Keyword.fetch!(opts, :input),
      run_id: Keyword.fetch!(opts, :run_id),
      council: Wire.council_name(Keyword.fetch!(opts, :council)),
      registry: Wire.registry_name(Keyword.get(opts, :registry, default_registry())),
      user_opts: Keyword.get(opts, :user_opts, []),
      subscribe: Keyword.get(opts, :subscribe, [])
    }

    request = if member_server, do: Map.put(request, :member_server, member_server), else: request
    # which node of a pool takes the run (CouncilEx.Pool)
    request = if p = opts[:placement], do: Map.put(request, :placement, p), else: request
    {request, watched} = telemetry(request, spec)

    # the verbose tracer is subscribed by the start itself: before the run
    # begins, so it misses nothing
    {level, io} = Verbose.wanted(opts)
    tracer = Verbose.start(level, io)
    request = if tracer, do: %{request | subscribe: request.subscribe ++ [tracer]}, else: request

    result =
      try do
        Backend.start(how, request)
      catch
        kind, reason ->
          Verbose.started(tracer, :error)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    Verbose.started(tracer, result)

    case result do
      {:ok, pid} = ok when is_pid(pid) ->
        if member_server, do: MemberServer.attach(member_server, pid)
        # For CouncilEx.await/2 on this pid once the run has ended.
        if is_binary(request.run_id), do: RunIndex.put(pid, request.registry, request.run_id)
        ok

      error ->
        if member_server, do: MemberServer.stop(member_server)
        if watched, do: CouncilEx.Telemetry.Forwarder.forget(request.run_id)
        error
    end
  end

  # the `$callers` chain a process started from here inherits, as a Task's
  defp callers, do: [self() | Process.get(:"$callers", [])]
  # With telemetry enabled (CouncilEx.Telemetry), the forwarder learns the
  # run's members and is subscribed to its events from the start (a run
  # without an id gets one here, so that the forwarder knows it). Without,
  # nothing: no subscription, no message.
  defp telemetry(request, spec) do
    with true <- CouncilEx.Telemetry.enabled?(),
         run_id = request.run_id || CouncilEx.generate_run_id(),
         pid when is_pid(pid) <-
           CouncilEx.Telemetry.Forwarder.watch(run_id, request.council, spec) do
      {%{request | run_id: run_id, subscribe: Enum.uniq(request.subscribe ++ [pid])}, true}
    else
      _ -> {request, false}
    end
  end

  @doc false
  @spec validate!(term) :: keyword
  def validate!(opts) do
    opts = validate_options!(opts)
    # Encoding errors (an option value with no JSON form) surface here too.
    Spec.to_json(Keyword.fetch!(opts, :spec))
    opts
  end

  @doc false
  # validate!/1 without encoding the spec (CouncilEx.__start__/4 encodes
  # it itself, or knows its JSON already).
  @spec validate_options!(term) :: keyword
  def validate_options!(opts) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of run options, got: #{inspect(opts)}"
    end

    for key <- @required, not Keyword.has_key?(opts, key) do
      raise ArgumentError,
            "missing required option #{inspect(key)} (required: #{inspect(@required)})"
    end

    for {key, _} <- opts, key not in @required and key not in @optional do
      raise ArgumentError,
            "unknown option #{inspect(key)} (known: #{inspect(@required ++ @optional)})"
    end

    case opts[:run_id] do
      nil ->
        :ok

      id when is_binary(id) and id != "" ->
        :ok

      other ->
        raise ArgumentError, ":run_id must be a non-empty binary or nil, got: #{inspect(other)}"
    end

    case opts[:council] do
      c when is_binary(c) and c != "" -> :ok
      c when is_atom(c) and c not in [nil, true, false] -> :ok
      other -> raise ArgumentError, ":council must be a module or a binary, got: #{inspect(other)}"
    end

    case opts[:spec] do
      %Spec{} ->
        :ok

      other ->
        raise ArgumentError,
              ":spec must be a %CouncilEx.Spec{} (see CouncilEx.DynamicCouncil.to_spec/1), got: #{inspect(other)}"
    end

    case Keyword.get(opts, :callers, []) do
      l when is_list(l) ->
        Enum.all?(l, &is_pid/1) ||
          raise(ArgumentError, ":callers must be a list of pids, got: #{inspect(l)}")

      other ->
        raise ArgumentError, ":callers must be a list of pids, got: #{inspect(other)}"
    end

    case Keyword.get(opts, :subscribe, []) do
      l when is_list(l) ->
        Enum.all?(l, &subscriber?/1) ||
          raise(
            ArgumentError,
            ":subscribe must be a list of pids, {pid, :tagged} or {pid, :batched}, got: #{inspect(l)}"
          )

      other ->
        raise ArgumentError,
              ":subscribe must be a list of pids, {pid, :tagged} or {pid, :batched}, got: #{inspect(other)}"
    end

    placement!(opts)
    user_opts!(Keyword.get(opts, :user_opts, []))
    Verbose.wanted(opts)
    registry!(opts)
    opts
  end

  # The run's own keys of a keyword user_opts (any other term, and other
  # keys, are the members' business).
  defp user_opts!(user) do
    if is_list(user) and Keyword.keyword?(user) do
      case Keyword.get(user, :retry) do
        nil ->
          :ok

        {max, base} when is_integer(max) and max >= 0 and is_integer(base) and base >= 0 ->
          :ok

        other ->
          raise ArgumentError,
                "user_opts :retry must be {max_attempts, base_ms} (non-negative integers), got: #{inspect(other)}"
      end

      case Keyword.get(user, :member_timeout_ms) do
        nil ->
          :ok

        ms when is_integer(ms) and ms >= 0 ->
          :ok

        other ->
          raise ArgumentError,
                "user_opts :member_timeout_ms must be a non-negative integer, got: #{inspect(other)}"
      end
    end
  end

  defp subscriber?(pid) when is_pid(pid), do: true
  defp subscriber?({pid, :tagged}) when is_pid(pid), do: true
  # the relay's own entry (CouncilEx.PubSub.Relay.start_subscribed/3)
  defp subscriber?({pid, :batched}) when is_pid(pid), do: not Backend.nif?()
  # the library's own subscribers with backend :nif (CouncilEx.start/3's
  # subscribe: true), which get events as the relay gives them
  defp subscriber?({pid, :lib}) when is_pid(pid), do: Backend.nif?()
  defp subscriber?(_), do: false

  @doc false
  # The :placement option (CouncilEx.Pool), :hash by default.
  @spec placement!(keyword) :: :hash | :least_loaded
  def placement!(opts) do
    case Keyword.get(opts, :placement, :hash) do
      p when p in [:hash, :least_loaded] ->
        p

      other ->
        raise ArgumentError, ":placement must be :hash or :least_loaded, got: #{inspect(other)}"
    end
  end

  @doc false
  @spec registry!(keyword) :: atom | binary
  def registry!(opts) do
    unless is_list(opts), do: raise(ArgumentError, "expected a keyword list, got: #{inspect(opts)}")

    case Keyword.get(opts, :registry) do
      nil -> default_registry()
      r when is_atom(r) and r not in [true, false] -> r
      r when is_binary(r) and r != "" -> r
      other -> raise ArgumentError, ":registry must be an atom or a binary, got: #{inspect(other)}"
    end
  end
end
