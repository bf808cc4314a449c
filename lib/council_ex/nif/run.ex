defmodule CouncilEx.Nif.Run do
  @moduledoc """
  The process that stands for a run of the NIF backend: the run's pid.

  It holds the run's handle (a NIF resource) and nothing else: the run's
  state lives in the core. It speaks enough of the GenServer protocol for
  `GenServer.call/3`, `GenServer.cast/2`, `GenServer.stop/3`,
  `:sys.get_state/1`, links and monitors to behave as the C node's run
  processes do (docs/protocol.md, "Calls on a run pid"):

    * a call or cast is handed to the core with its `from`; the answer
      comes back from the NIF call when it carried the call out itself,
      else as `{:"$council_reply", from, reply}` from the core's thread,
      and is passed on with `:gen.reply/2` (so a call that ended
      meanwhile, e.g. by this process's exit, gets no stray message); `:run_id` and
      `:state` (the summary as of the run's last round change, which the
      core's thread keeps where this process can read it) are answered at
      once;
    * messages that are not calls (member servers' replies and tokens,
      the member server's `:DOWN`) are handed to the core;
    * when the run ends the core sends `{:"$council_end", reason}` (or
      `{:"$council_end", reason, awaiters, outcome}`: the awaiters are
      answered first) after the run's events went out, and the process
      exits with `reason`: `:normal`, `{:shutdown, :cancelled}`,
      `{:shutdown, {:failed, errors}}`, a `GenServer.stop/3` reason, or
      `:shutdown` when the application stops;
    * it traps exits and honours an exit signal as a GenServer that
      stops in its `terminate/2` would: `:normal` means nothing; any
      other reason (a supervisor's `:shutdown` in
      `DynamicSupervisor.terminate_child/2` or its own shutdown, a linked
      caller's exit, `Process.exit/2`) cancels the run with that reason,
      so subscribers get `run_cancelled` and awaiters their answer
      before the process exits with it. `:kill` ends it at once; the
      run is cancelled when the process's exit drops its term of the
      run's handle, whose destructor tells the core (no monitor). A copy
      of that term kept elsewhere (a tracer of this process's messages or
      calls) keeps the handle alive: the run then goes on to its own end,
      unless a start with its id or a call by its id (`whereis`,
      `state`, `result`, `cancel`) finds the process gone first and
      cancels it.

  It hibernates from its start, and again once a timer of 100 ms has
  fired twice with no message between them (100 to 200 ms after its last
  message), so an idle run costs the smallest heap a process can have (see
  README section 4 for the measured size) and a run that is being called
  pays neither a garbage collection nor a timer per call: one timer runs
  per 100 ms while messages come.
  """

  alias CouncilEx.Nif

  # Hibernation shrinks an idle run's process to the smallest heap there
  # is, but costs a garbage collection per message: a run pid that is
  # being called hibernates only after a quiet period of this length. It
  # is timed by one timer per period (a `receive ... after` per message
  # would set and cancel a timer for each: 10-15% of a call).
  @hibernate_after_ms 100
  @quiet :"$council_quiet"
  # the process dictionary's keys of the last :state answer and of the run
  # id, dropped when it hibernates
  @summary :"$council_summary"
  @run_id :"$council_run_id"

  @doc false
  # A run's pid, linked to the caller for :start_link. With a member
  # server, the pid monitors it before this returns (so a server that dies
  # at any point of the run is seen with its reason, as by the C node,
  # which monitors it before the run begins).
  @spec spawn(:start | :start_link, pid | nil) :: pid
  def spawn(how, server) do
    pid =
      case how do
        :start -> :erlang.spawn(__MODULE__, :init, [self(), server])
        :start_link -> :erlang.spawn_link(__MODULE__, :init, [self(), server])
      end

    if is_pid(server) do
      receive do
        {:"$council_ready", ^pid} -> :ok
      end
    end

    pid
  end

  @doc false
  # Waits for the core to say whether the run was made (selectively: a
  # call that comes first waits in the mailbox). When it was, and the
  # start was queued for the core's thread, this process gives the start
  # its answer (that thread sends one message per start, not one here and
  # one to the starter); a start carried out by its own NIF call was
  # answered by that call (no caller in the message).
  def init(starter, server) do
    Process.flag(:trap_exit, true)

    if is_pid(server) do
      Process.monitor(server)
      send(starter, {:"$council_ready", self()})
    end

    receive do
      {:"$council_run", nil, _} ->
        exit(:normal)

      # the start's NIF call answered the starter itself
      {:"$council_run", run, _server, nil} ->
        :erlang.hibernate(__MODULE__, :wait, [run, nil])

      {:"$council_run", run, _server, {caller, ref}} ->
        send(caller, {ref, {:ok, self()}})
        :erlang.hibernate(__MODULE__, :wait, [run, nil])
    end
  end

  # Hibernated: the first message arms the period's timer.
  @doc false
  def wait(run, stop) do
    receive do
      message ->
        :erlang.start_timer(@hibernate_after_ms, self(), @quiet)
        handle(message, run, stop)
    end
  end

  # Awake, with the timer armed: when it fires, a quiet period begins.
  defp next(run, stop) do
    receive do
      {:timeout, _, @quiet} -> quiet(run, stop)
      message -> handle(message, run, stop)
    end
  end

  # A period with no message so far: if it ends so, the process hibernates.
  defp quiet(run, stop) do
    :erlang.start_timer(@hibernate_after_ms, self(), @quiet)

    receive do
      {:timeout, _, @quiet} ->
        Process.delete(@summary)
        Process.delete(@run_id)
        :erlang.hibernate(__MODULE__, :wait, [run, stop])

      message ->
        handle(message, run, stop)
    end
  end

  # the run id, kept here while awake as the summary is (a NIF call and a
  # new binary per call cost more than a dictionary read)
  defp handle({:"$gen_call", from, :run_id}, run, stop) do
    id =
      case Process.get(@run_id) do
        nil ->
          id = Nif.run_id(run)
          Process.put(@run_id, id)
          id

        id ->
          id
      end

    :gen.reply(from, id)
    next(run, stop)
  end

  # the run's summary as of its last round change, kept by the core's
  # thread where this process reads it (the term is kept here, while awake,
  # until the summary changes); the core answers once it has ended
  defp handle({:"$gen_call", from, :state}, run, stop) do
    case Nif.run_state(run, Process.get(@summary)) do
      :miss ->
        call_core(run, from, :state)

      {_version, reply} = cached ->
        Process.put(@summary, cached)
        :gen.reply(from, reply)
    end

    next(run, stop)
  end

  defp handle({:"$gen_call", from, request}, run, stop) do
    call_core(run, from, request)
    next(run, stop)
  end

  defp handle({:"$gen_cast", request}, run, stop) do
    Nif.run_call(run, nil, request)
    next(run, stop)
  end

  defp handle({:"$council_reply", from, reply}, run, stop) do
    :gen.reply(from, reply)
    next(run, stop)
  end

  defp handle({:"$council_end", reason}, _run, stop), do: finish(reason, stop)

  defp handle({:"$council_end", reason, awaiters, outcome}, _run, stop) do
    Enum.each(awaiters, &:gen.reply(&1, outcome))
    finish(reason, stop)
  end

  # GenServer.stop/3 (sys:terminate): the run is cancelled and ends with
  # the stop's reason; the stop is answered just before the exit.
  defp handle({:system, from, {:terminate, reason}}, run, nil) do
    Nif.run_stop(run, reason)
    next(run, {from, reason})
  end

  defp handle({:system, from, {:terminate, _reason}}, run, stop) do
    :gen.reply(from, :ok)
    next(run, stop)
  end

  # An exit signal: the run is cancelled with its reason and the process
  # exits with it once the run's end (its events out) comes back.
  defp handle({:EXIT, _from, :normal}, run, stop), do: next(run, stop)

  defp handle({:EXIT, _from, reason}, run, nil) do
    Nif.run_stop(run, reason)
    next(run, {:exit, reason})
  end

  defp handle({:EXIT, _from, _reason}, run, stop), do: next(run, stop)

  defp handle({:system, from, :get_state}, run, stop) do
    call_core(run, from, :"$sys_state")
    next(run, stop)
  end

  defp handle({:system, from, _other}, run, stop) do
    :gen.reply(from, {:error, :unsupported})
    next(run, stop)
  end

  defp handle(message, run, stop) do
    Nif.run_info(run, message)
    next(run, stop)
  end

  # the core's answer, at once when the NIF call carried the call out
  # itself, else as {:"$council_reply", from, reply} later
  defp call_core(run, from, request) do
    case Nif.run_call(run, from, request) do
      {:reply, reply} -> :gen.reply(from, reply)
      :ok -> :ok
    end
  end

  defp finish(reason, nil), do: exit(reason)
  defp finish(_reason, {:exit, reason}), do: exit(reason)

  defp finish(_reason, {from, stop_reason}) do
    :gen.reply(from, :ok)
    exit(stop_reason)
  end
end
