defmodule CouncilEx.Telemetry do
  @moduledoc """
  `:telemetry` events of runs, as the original council_ex emits them:

    * `[:council_ex, :run, :start | :stop | :exception]`
    * `[:council_ex, :round, :start | :stop | :exception]`
    * `[:council_ex, :member, :start | :stop | :exception]`
    * `[:council_ex, :provider, :request, :start | :stop | :exception]`

  `:start` events measure `%{system_time, monotonic_time}`. `:stop` events
  measure `%{duration, input_tokens, output_tokens, monotonic_time}`:
  `duration` in native time units, as the core measured it (a member's
  from its `:member_started` to its result, backoff waits included; a
  provider request's the time its attempts were with the provider; a
  round's from start to completion; a run's from `:run_started` to its
  terminal event); tokens as the model APIs reported them (0 for
  providers that report none). `:exception` events measure `%{duration}`
  (since the matching `:start`, as the library saw it).

  Metadata: `run_id`, `council`, and where they apply `round_name` (an
  atom when that atom exists), `round_idx`, `member_id`, `member_module`
  (an Elixir-module member's module, else nil), `provider` (an atom:
  `:mock`, `:openai`, `:beam`, ...), `model` (the member's `model`
  option, or nil), `status` (a member's, as its result has it: `:ok`,
  `:error`, `:timeout`, `:invalid_output`, `:eliminated`; a round's
  `:ok`, or `:skipped` when its router chose nobody; a run's
  `:completed | :cancelled`), `attempts`, `error_kind`,
  `confidence` (always nil: the core does not estimate it) and, on
  `:exception`, `kind` (`:error`) and `reason` (a member's
  `%CouncilEx.Error{}`, a run's list of them, or `:run_failed` /
  `:cancelled` for what the run's end cut short).

  Which event when:

    * a member's `:stop` comes for every result (its `status` says how it
      went); a provider request's `:exception` replaces its `:stop` when
      the member failed (`:error`, `:timeout`, `:invalid_output`); members and rounds still in progress when a run
      fails or is cancelled get `:exception`;
    * a run that fails gets `[:council_ex, :run, :exception]`; a
      cancelled one a `:stop` with `status: :cancelled`;
    * members left out of a round (status `:skipped`: its `members`
      option or its router) were never started and get no member events;
    * when the forwarder falls behind and its subscription is cut off
      (`{:council_ex_overflow, ...}`, see `CouncilEx.PubSub`), the run's
      events after that are lost to it, but not its end: the terminal
      event still follows the notice, and gives the run's `:stop` or
      `:exception`, after an `:exception` with `reason: :overflow` for
      each member and round the forwarder had seen start and not end
      (how they went is among what it missed).

  ## Enabling

  `:telemetry` is an optional dependency: without it the library compiles
  and runs, and emits nothing. With it, the events of a run are emitted
  when, as the run starts, `config :council_ex, telemetry: true` is set or
  a handler is attached to an event under `[:council_ex]` (the default
  `telemetry: :auto`; `false` turns them off): the run's events then also
  go to this module's process (`CouncilEx.Telemetry.Forwarder`), which
  turns them into telemetry events and runs the handlers. Runs started
  with none of that cost nothing: no subscription, no process involved.
  Handlers attached later see the runs started later. Handlers run in the
  forwarder's process, one event after the other, in each run's order.
  """

  require Logger

  @events (for kind <- [:run, :round, :member], ev <- [:start, :stop, :exception] do
             [:council_ex, kind, ev]
           end) ++
            for(ev <- [:start, :stop, :exception], do: [:council_ex, :provider, :request, ev])

  @logger_id {__MODULE__, :default_logger}

  @doc "Every event name this module emits."
  @spec events() :: [[atom]]
  def events, do: @events

  @doc """
  Whether the `:telemetry` application's module is loaded (looked up once,
  then remembered; `refresh/0` looks again, e.g. after loading it at run
  time).
  """
  @spec available?() :: boolean
  def available? do
    case :persistent_term.get({__MODULE__, :available}, nil) do
      nil -> refresh()
      known -> known
    end
  end

  @doc "Looks again whether `:telemetry` is loaded; returns `available?/0`."
  @spec refresh() :: boolean
  def refresh do
    known = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :execute, 3)
    :persistent_term.put({__MODULE__, :available}, known)
    known
  end

  @doc """
  Whether a run starting now gets telemetry events (see "Enabling"):
  `:telemetry` is there and either `config :council_ex, telemetry: true`
  or a handler listens under `[:council_ex]`.
  """
  @spec enabled?() :: boolean
  def enabled? do
    case Application.get_env(:council_ex, :telemetry, :auto) do
      false -> false
      true -> available?()
      _auto -> available?() and apply(:telemetry, :list_handlers, [[:council_ex]]) != []
    end
  end

  @doc false
  # Emits one event (the forwarder's; :telemetry is known to be there).
  @spec execute([atom], map, map) :: :ok
  def execute(event, measurements, metadata) do
    apply(:telemetry, :execute, [event, measurements, metadata])
  end

  @doc """
  Attaches Logger handlers to the events: `:start` and `:stop` at `:level`
  (default `:info`), `:exception` always at `:warning`. `:events` picks
  the kinds (default `[:run, :round, :member, :provider]`). Attaching
  again replaces the handlers. Returns `:ok`, or `{:error,
  :telemetry_unavailable}` when `:telemetry` is not loaded.

      CouncilEx.Telemetry.attach_default_logger(level: :debug, events: [:run, :round])
  """
  @spec attach_default_logger(keyword) :: :ok | {:error, :telemetry_unavailable}
  def attach_default_logger(opts \\ []) do
    if available?() do
      detach_default_logger()
      level = Keyword.get(opts, :level, :info)
      kinds = Keyword.get(opts, :events, [:run, :round, :member, :provider])
      events = Enum.filter(@events, fn [:council_ex, kind | _] -> kind in kinds end)
      apply(:telemetry, :attach_many, [@logger_id, events, &__MODULE__.log_event/4, level])
      :ok
    else
      {:error, :telemetry_unavailable}
    end
  end

  @doc "Detaches the handlers of `attach_default_logger/1` (if any)."
  @spec detach_default_logger() :: :ok
  def detach_default_logger do
    if available?(), do: apply(:telemetry, :detach, [@logger_id])
    :ok
  end

  @doc false
  # The default logger's handler.
  def log_event(event, measurements, metadata, level) do
    level = if List.last(event) == :exception, do: :warning, else: level
    Logger.log(level, fn -> log_line(event, measurements, metadata) end)
  end

  defp log_line(event, m, md) do
    name = Enum.join(event, ".")

    where =
      [
        {"run", md[:run_id]},
        {"round", md[:round_name] && "#{md.round_name}##{md[:round_idx]}"},
        {"member", md[:member_id]},
        {"provider", md[:provider] && inspect(md.provider)},
        {"model", md[:model]},
        {"status", md[:status] && inspect(md.status)},
        {"attempts", md[:attempts]}
      ]
      |> Enum.reject(fn {_, v} -> v == nil end)
      |> Enum.map_join(" ", fn {k, v} -> "#{k}=#{v}" end)

    took =
      case m do
        %{duration: d} -> " in #{System.convert_time_unit(d, :native, :microsecond) / 1000} ms"
        _ -> ""
      end

    tokens =
      case m do
        %{input_tokens: i, output_tokens: o} when i + o > 0 -> " tokens=#{i}/#{o}"
        _ -> ""
      end

    reason = if md[:reason], do: " reason=" <> inspect(md.reason), else: ""
    "[#{name}] #{where}#{took}#{tokens}#{reason}"
  end
end

defmodule CouncilEx.Telemetry.Forwarder do
  @moduledoc """
  Turns the events of runs into `:telemetry` events (`CouncilEx.Telemetry`).
  `CouncilEx.RunServer` subscribes it to a run when the run starts with
  telemetry enabled and tells it the run's members (`watch/2`); it forgets
  a run at its terminal event.
  """
  use GenServer

  alias CouncilEx.{Spec, Telemetry, Wire}

  @topic_prefix CouncilEx.Schema.topic_prefix()
  @terminal [:run_completed, :run_failed, :run_cancelled]

  @doc false
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc """
  Prepares for the run `run_id` of `spec`: its events will carry the
  members' providers, models and modules. Returns the forwarder's pid (to
  subscribe), or nil when it is not running.
  """
  @spec watch(binary, binary, Spec.t()) :: pid | nil
  def watch(run_id, council, %Spec{} = spec) do
    case Process.whereis(__MODULE__) do
      nil ->
        nil

      pid ->
        members =
          Map.new(spec.members, fn m ->
            model = m.options["model"]

            {m.id,
             %{provider: m.provider, model: if(is_binary(model), do: model), module: m.module}}
          end)

        GenServer.cast(pid, {:watch, run_id, %{council: Wire.council(council), members: members}})
        pid
    end
  end

  @doc "Forgets a run that did not start."
  @spec forget(binary) :: :ok
  def forget(run_id), do: GenServer.cast(__MODULE__, {:forget, run_id})

  @impl true
  def init(nil), do: {:ok, %{}}

  @impl true
  def handle_cast({:watch, run_id, info}, runs),
    do: {:noreply, Map.put(runs, run_id, Map.merge(info, %{open: %{}, seq: 0}))}

  def handle_cast({:forget, run_id}, runs), do: {:noreply, Map.delete(runs, run_id)}

  @impl true
  # Cut off (it fell behind): only the run's terminal event follows, and
  # ends it (see emit/3).
  def handle_info({:council_ex_overflow, @topic_prefix <> run_id, _}, runs) do
    case runs do
      %{^run_id => run} -> {:noreply, %{runs | run_id => Map.put(run, :cut, true)}}
      _ -> {:noreply, runs}
    end
  end

  # Its node lost: nothing follows.
  def handle_info({:council_ex_down, @topic_prefix <> run_id, _}, runs),
    do: {:noreply, Map.delete(runs, run_id)}

  def handle_info(event, runs) when is_tuple(event) and tuple_size(event) >= 3 do
    event = Wire.event(event)
    run_id = elem(event, 1)

    case runs do
      %{^run_id => run} ->
        case emit(event, run_id, run) do
          :done -> {:noreply, Map.delete(runs, run_id)}
          run -> {:noreply, Map.put(runs, run_id, run)}
        end

      _ ->
        {:noreply, runs}
    end
  end

  def handle_info(_other, runs), do: {:noreply, runs}

  # ------------------------------------------------------------- events

  # After an overflow notice only the terminal event counts (the others a
  # cut subscription no longer carries); what was open when it came ended
  # unseen.
  defp emit(event, id, %{cut: true} = run) when elem(event, 0) in @terminal do
    finish(id, run, :overflow)
    emit(event, id, %{run | open: Map.take(run.open, [:run]), cut: false})
  end

  defp emit(_event, _id, %{cut: true} = run), do: run

  defp emit({:run_started, id, _council, _input}, id, run) do
    start([:council_ex, :run, :start], base(id, run))
    open(run, :run)
  end

  defp emit({:round_started, id, name, idx}, id, run) do
    start([:council_ex, :round, :start], round_md(id, run, name, idx))
    open(run, {:round, name, idx})
  end

  defp emit({:member_started, id, name, member}, id, run) do
    md = member_md(id, run, name, member)
    start([:council_ex, :member, :start], md)
    start([:council_ex, :provider, :request, :start], md)
    open(run, {:member, name, member})
  end

  # a member the round's members option or its router left out: never
  # started, no member events
  defp emit({:member_completed, _id, _name, _member, %{status: :skipped}}, _id2, run), do: run

  defp emit({:member_completed, id, name, member, res}, id, run) do
    md =
      member_md(id, run, name, member)
      |> Map.merge(%{
        status: res[:status],
        attempts: res[:attempts],
        error_kind: res[:error_kind]
      })

    m = stop_measurements(res)
    Telemetry.execute([:council_ex, :member, :stop], m, md)

    if res[:status] in [:error, :timeout, :invalid_output] do
      Telemetry.execute(
        [:council_ex, :provider, :request, :exception],
        %{duration: native(res[:provider_us])},
        Map.merge(md, %{kind: :error, reason: res[:error]})
      )
    else
      Telemetry.execute(
        [:council_ex, :provider, :request, :stop],
        %{m | duration: native(res[:provider_us])},
        md
      )
    end

    close(run, {:member, name, member})
  end

  defp emit({:round_completed, id, name, res}, id, run) do
    md = Map.put(round_md(id, run, name, res[:idx]), :status, round_status(res))
    Telemetry.execute([:council_ex, :round, :stop], stop_measurements(res), md)
    close(run, {:round, name, res[:idx]})
  end

  defp emit({:run_completed, id, res}, id, run) do
    Telemetry.execute(
      [:council_ex, :run, :stop],
      stop_measurements(res),
      Map.put(base(id, run), :status, :completed)
    )

    :done
  end

  defp emit({:run_failed, id, errors, _res}, id, run) do
    finish(id, run, :run_failed)
    md = Map.merge(base(id, run), %{kind: :error, reason: errors, status: :failed})
    exception([:council_ex, :run, :exception], run, :run, md)
    :done
  end

  defp emit({:run_cancelled, id, res}, id, run) do
    finish(id, run, :cancelled)

    Telemetry.execute(
      [:council_ex, :run, :stop],
      stop_measurements(res),
      Map.put(base(id, run), :status, :cancelled)
    )

    :done
  end

  defp emit(_other, _id, run), do: run

  # What a run's end cut short: members, then rounds, innermost first.
  defp finish(id, run, reason) do
    run.open
    |> Enum.reject(fn {key, _} -> key == :run end)
    |> Enum.sort_by(fn {_, {seq, _}} -> -seq end)
    |> Enum.each(fn
      {{:member, name, member} = key, _} ->
        md = Map.merge(member_md(id, run, name, member), %{kind: :error, reason: reason})
        exception([:council_ex, :provider, :request, :exception], run, key, md)
        exception([:council_ex, :member, :exception], run, key, md)

      {{:round, name, idx} = key, _} ->
        md = Map.merge(round_md(id, run, name, idx), %{kind: :error, reason: reason})
        exception([:council_ex, :round, :exception], run, key, md)
    end)
  end

  defp start(event, md) do
    Telemetry.execute(
      event,
      %{system_time: System.system_time(), monotonic_time: System.monotonic_time()},
      md
    )
  end

  defp exception(event, run, key, md) do
    since =
      case run.open do
        %{^key => {_seq, t0}} -> System.monotonic_time() - t0
        _ -> 0
      end

    Telemetry.execute(event, %{duration: since}, md)
  end

  defp open(run, key),
    do: %{run | open: Map.put(run.open, key, {run.seq, System.monotonic_time()}), seq: run.seq + 1}

  defp close(run, key), do: %{run | open: Map.delete(run.open, key)}

  defp stop_measurements(res) do
    usage = res[:usage] || %{}

    %{
      duration: native(res[:duration_us]),
      input_tokens: usage[:input_tokens] || 0,
      output_tokens: usage[:output_tokens] || 0,
      monotonic_time: System.monotonic_time()
    }
  end

  # a round whose router chose nobody: every member skipped
  defp round_status(%{members: [_ | _] = ms}) do
    if Enum.all?(ms, &(&1[:status] == :skipped)), do: :skipped, else: :ok
  end

  defp round_status(_res), do: :ok

  defp native(us) when is_integer(us), do: System.convert_time_unit(us, :microsecond, :native)
  defp native(_), do: 0

  defp base(id, run), do: %{run_id: id, council: run.council}

  defp round_md(id, run, name, idx),
    do: Map.merge(base(id, run), %{round_name: name, round_idx: idx})

  defp member_md(id, run, name, member) do
    info = Map.get(run.members, member, %{})

    Map.merge(base(id, run), %{
      round_name: name,
      round_idx: round_idx(run, name),
      member_id: member,
      member_module: info[:module],
      provider: info[:provider],
      model: info[:model],
      confidence: nil
    })
  end

  # The index of the open round of that name (members' events name their
  # round, not its index).
  defp round_idx(run, name) do
    Enum.find_value(run.open, fn
      {{:round, ^name, idx}, _} -> idx
      _ -> nil
    end)
  end
end
