defmodule CouncilEx.Verbose do
  @moduledoc """
  The verbose tracer: one process per run that logs each of the run's
  events in a readable line, from `run_started` to the terminal event.

  It is turned on by `verbose: true` (or `:debug`) among a start's
  options or in its `:user_opts`, on every start path (`CouncilEx.start/3`,
  `start_link/3`, `run/3`, `CouncilEx.Supervisor.start_link/4`,
  `CouncilEx.RunServer.start/1` and `start_link/1`):

      CouncilEx.run(MyApp.Triage, "Which plan is safest?", verbose: true)
      CouncilEx.start(MyApp.Triage, "q", user_opts: [verbose: :debug])

  The tracer is subscribed to the run's topic in the start request itself,
  so the core subscribes it before the run begins and it misses nothing. It
  ends after the run's terminal event (or when the run's process is gone
  and no terminal event can come), and at once when the start fails.

  Lines go to `Logger` at level `:info`, each prefixed with
  `[council_ex <run_id>]`; with `verbose_io: device` (a start option, as
  the original's) they are written to that IO device instead.
  `true` logs the run's course: rounds, each member's start and result
  (status, attempts, tokens, the error), tool calls, round aggregates and
  the outcome. `:debug` adds each streamed chunk and the members' texts
  (truncated to 200 bytes).
  """

  require Logger

  @text_max 200
  # After the run's process has gone: how long the terminal event, sent
  # right after it, may still take to arrive.
  @after_down_ms 5_000

  @typedoc "The verbosity: `false`, `true` or `:debug`."
  @type level :: boolean | :debug

  @doc false
  # The level and IO device asked for by a start's options (`:verbose`,
  # `:verbose_io`) or its `:user_opts` (a keyword list with `:verbose`).
  @spec wanted(keyword) :: {level, IO.device() | nil}
  def wanted(opts) do
    user = Keyword.get(opts, :user_opts)
    from_user = if is_list(user) and Keyword.keyword?(user), do: Keyword.get(user, :verbose)
    level = Keyword.get(opts, :verbose, from_user || false)

    unless level in [true, false, :debug] do
      raise ArgumentError, ":verbose must be true, false or :debug, got: #{inspect(level)}"
    end

    {level, Keyword.get(opts, :verbose_io)}
  end

  @doc false
  # A tracer, waiting for the events of the run whose start request
  # subscribes it (to that run's topic only); `nil` when level is false.
  @spec start(level, IO.device() | nil) :: pid | nil
  def start(false, _io), do: nil

  def start(level, io) when level in [true, :debug] do
    :proc_lib.spawn(__MODULE__, :init, [level, io])
  end

  @doc false
  # Tells a tracer how its run's start went: `{:ok, run_pid}` (it watches
  # the run's process too), anything else (it ends).
  @spec started(pid | nil, term) :: :ok
  def started(nil, _outcome), do: :ok
  def started(tracer, outcome), do: send(tracer, {__MODULE__, :started, outcome}) && :ok

  @doc false
  def init(level, io) do
    receive do
      {__MODULE__, :started, {:ok, pid}} when is_pid(pid) ->
        ref = Process.monitor(pid)
        loop(%{level: level, io: io, ref: ref, pid: pid})

      {__MODULE__, :started, _failed} ->
        :ok
    end
  end

  @tags [:run_started, :round_started, :member_started, :member_token, :member_completed,
         :tool_call_request, :tool_call_result, :round_completed, :run_completed, :run_failed,
         :run_cancelled]

  # Its events (the subscription is to its run's topic only), in order,
  # until the terminal one.
  defp loop(st) do
    receive do
      event when is_tuple(event) and tuple_size(event) >= 3 and elem(event, 0) in @tags ->
        emit(st, event)
        if terminal?(event), do: :ok, else: loop(st)

      {:DOWN, ref, :process, _pid, reason} when ref == st.ref ->
        receive do
          event when is_tuple(event) and tuple_size(event) >= 3 and elem(event, 0) in @tags ->
            emit(st, event)
            if terminal?(event), do: :ok, else: loop(%{st | ref: nil})
        after
          @after_down_ms ->
            Logger.info("[council_ex] run #{inspect(st.pid)} ended (#{inspect(reason)}) " <>
                          "before its outcome was seen")
        end

      _other ->
        loop(st)
    end
  end

  defp terminal?(event), do: elem(event, 0) in [:run_completed, :run_failed, :run_cancelled]

  defp emit(st, event) do
    case line(event, st.level) do
      nil -> :ok
      text -> put(st, elem(event, 1), text)
    end
  end

  defp put(%{io: nil}, id, text), do: Logger.info("[council_ex #{id}] " <> text)
  defp put(%{io: io}, id, text), do: IO.puts(io, "[council_ex #{id}] " <> text)

  # ------------------------------------------------------------------ lines

  @doc false
  # The line of one event (as the C node sends it: names as binaries), or
  # nil for an event not shown at this level.
  @spec line(tuple, level) :: binary | nil
  def line({:run_started, _id, council, _input}, _level), do: "run started: #{name(council)}"

  def line({:round_started, _id, round, idx}, _level), do: "round #{idx} #{round} started"

  def line({:member_started, _id, round, member}, _level), do: "  #{round}/#{member} started"

  def line({:member_token, _id, round, member, chunk}, :debug),
    do: "  #{round}/#{member} token #{inspect(cut(chunk))}"

  def line({:member_token, _, _, _, _}, _level), do: nil

  def line({:member_completed, _id, round, member, result}, level),
    do: "  #{round}/#{member} " <> member_line(result, level)

  def line({:tool_call_request, _id, round, member, call}, _level),
    do: "  #{round}/#{member} calls tool #{call[:name]} #{cut(call[:arguments])}"

  def line({:tool_call_result, _id, round, member, call}, level) do
    "  #{round}/#{member} tool #{call[:name]} #{call[:status]}" <>
      if(level == :debug, do: ": " <> cut(call[:result]), else: "")
  end

  def line({:round_completed, _id, round, rr}, _level) do
    agg = if is_map(rr) and rr[:aggregate], do: " #{compact(rr[:aggregate])}", else: ""
    "round #{rr[:idx]} #{round} completed#{agg}#{tokens(rr[:usage])}"
  end

  def line({:run_completed, _id, result}, level) do
    "run completed#{tokens(result[:usage])}" <>
      if(level == :debug, do: ": " <> inspect(cut(result[:final])), else: "")
  end

  def line({:run_failed, _id, errors, result}, _level),
    do: "run failed#{tokens(result[:usage])}: " <> Enum.map_join(errors, "; ", &error_text/1)

  def line({:run_cancelled, _id, result}, _level), do: "run cancelled#{tokens(result[:usage])}"

  def line(_other, _level), do: nil

  defp member_line(r, level) when is_map(r) do
    base = "#{r[:status]} (attempts #{r[:attempts]}#{tokens(r[:usage])})"

    cond do
      r[:error] != nil ->
        base <> ": " <> error_text(r[:error])

      level == :debug and is_binary(r[:text]) ->
        base <> ": " <> inspect(cut(r[:text]))

      true ->
        base
    end
  end

  defp member_line(other, _level), do: inspect(other)

  defp error_text(%{message: message}) when is_binary(message), do: message
  defp error_text(text) when is_binary(text), do: text
  defp error_text(other), do: inspect(other)

  defp tokens(%{input_tokens: i, output_tokens: o}) when i + o > 0, do: ", tokens #{i}/#{o}"
  defp tokens(_), do: ""

  defp name("Elixir." <> mod), do: mod
  defp name(other) when is_binary(other), do: other
  defp name(other), do: inspect(other)

  defp compact(map) when is_map(map) do
    CouncilEx.JSON.encode!(map)
  rescue
    _ -> inspect(map)
  end

  defp compact(other), do: inspect(other)

  defp cut(text) when is_binary(text) and byte_size(text) > @text_max,
    do: binary_part(text, 0, @text_max) <> "..."

  defp cut(other), do: other || ""
end
