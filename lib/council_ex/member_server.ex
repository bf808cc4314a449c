defmodule CouncilEx.MemberServer do
  @moduledoc """
  Serves `beam` provider calls of one run (docs/protocol.md, "The `beam`
  provider"): for each `{:council_member_call, run_pid, call_id, request}`
  it runs the member's `CouncilEx.Member` module in a task under
  `CouncilEx.MemberServer.Tasks` and answers the run with
  `{:council_member_token, call_id, chunk}` and
  `{:council_member_reply, call_id, {:ok, text} | {:error, message}}`.

  `CouncilEx.RunServer` starts one per run whose spec has Elixir-module
  members (under `CouncilEx.MemberServer.Supervisor`) and passes it as the
  run's `:member_server`; it ends, killing unfinished calls, when the run
  ends.
  """
  use GenServer, restart: :temporary

  @doc "Starts a member server for a run with these beam members (`member_id => module`)."
  @spec start_for_run!(%{binary => module}, [pid]) :: pid
  def start_for_run!(members, callers) do
    {:ok, pid} =
      DynamicSupervisor.start_child(
        CouncilEx.MemberServer.Supervisor,
        {__MODULE__, members: members, callers: callers}
      )

    pid
  end

  @doc "Starts a member server (see `start_for_run!/2`)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "Tells the server its run: it stops when that run ends."
  @spec attach(pid, pid) :: :ok
  def attach(server, run_pid), do: GenServer.cast(server, {:attach, run_pid})

  @doc "Stops the server, killing unfinished member calls."
  @spec stop(pid) :: :ok
  def stop(server) do
    GenServer.stop(server, :normal)
  catch
    :exit, _ -> :ok
  end

  @doc """
  Runs one member call in the calling process and returns the reply that
  is sent to the run (used by the tasks; handy in tests).
  """
  @spec run_call(module, map, (binary -> :ok)) :: {:ok, binary} | {:error, binary}
  def run_call(module, request, emit) do
    case module.call(request, emit) do
      {:ok, text} when is_binary(text) ->
        {:ok, text}

      {:ok, text} when is_list(text) ->
        {:ok, IO.iodata_to_binary(text)}

      {:error, reason} ->
        {:error, reason_text(reason)}

      other ->
        {:error,
         "#{inspect(module)}.call/2 returned #{inspect(other)}, expected {:ok, text} or {:error, reason}"}
    end
  rescue
    e -> {:error, Exception.message(e)}
  catch
    kind, reason -> {:error, Exception.format_banner(kind, reason)}
  end

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    {:ok,
     %{
       members: Keyword.fetch!(opts, :members),
       callers: Keyword.get(opts, :callers, []),
       run: nil,
       tasks: %{}
     }}
  end

  @impl true
  def handle_cast({:attach, run_pid}, state) do
    Process.monitor(run_pid)
    {:noreply, %{state | run: run_pid}}
  end

  @impl true
  def handle_info({:council_member_call, run_pid, call_id, request}, state) do
    {module, member_id} = module_for(request, state.members)
    callers = state.callers

    {:ok, task} =
      Task.Supervisor.start_child(CouncilEx.MemberServer.Tasks, fn ->
        Process.put(:"$callers", callers)

        emit = fn chunk ->
          send(run_pid, {:council_member_token, call_id, IO.iodata_to_binary(chunk)}) && :ok
        end

        reply =
          case module do
            nil -> {:error, "no Elixir module for member #{inspect(member_id)}"}
            mod -> run_call(mod, request, emit)
          end

        send(run_pid, {:council_member_reply, call_id, reply})
      end)

    ref = Process.monitor(task)
    {:noreply, %{state | tasks: Map.put(state.tasks, ref, task)}}
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) when is_map_key(state.tasks, ref) do
    {:noreply, %{state | tasks: Map.delete(state.tasks, ref)}}
  end

  def handle_info({:DOWN, _ref, :process, run, _reason}, %{run: run} = state) do
    {:stop, :normal, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    for {_ref, task} <- state.tasks, do: Process.exit(task, :kill)
    :ok
  end

  # The request names its member; its module comes from the request's
  # options when present, else from this run's member table.
  defp module_for(request, members) do
    member_id =
      case request do
        %{"member_id" => id} when is_binary(id) -> id
        %{"member" => id} when is_binary(id) -> id
        %{"member" => %{"id" => id}} when is_binary(id) -> id
        _ -> nil
      end

    by_option =
      case request do
        %{"options" => %{"module" => name}} ->
          Enum.find(Map.values(members), &(Atom.to_string(&1) == name))

        %{"module" => name} ->
          Enum.find(Map.values(members), &(Atom.to_string(&1) == name))

        _ ->
          nil
      end

    module =
      Map.get(members, member_id) || by_option ||
        case map_size(members) do
          1 -> members |> Map.values() |> hd()
          _ -> nil
        end

    {module, member_id}
  end

  defp reason_text(reason) when is_binary(reason), do: reason
  defp reason_text(reason) when is_atom(reason), do: Atom.to_string(reason)
  defp reason_text(reason), do: inspect(reason)
end
