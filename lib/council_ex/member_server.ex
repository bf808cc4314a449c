defmodule CouncilEx.MemberServer do
  @moduledoc """
  Serves the Elixir side of one run (docs/protocol.md, "The `beam`
  provider" and "Tools served by the BEAM"):

    * `beam` provider calls: for each
      `{:council_member_call, run_pid, call_id, request}` it runs the
      member's `CouncilEx.Member` module in a task under
      `CouncilEx.MemberServer.Tasks` and answers the run with
      `{:council_member_token, call_id, chunk}` and
      `{:council_member_reply, call_id, {:ok, text} | {:error, message}}`;
    * tool calls of model members whose tool handler is an Elixir
      function: for each `{:council_tool_call, run_pid, tool_call_id,
      member_id, name, arguments}` it calls that function (`run_tool/3`)
      in a task and answers the run with
      `{:council_tool_reply, tool_call_id, {:ok, text} | {:error, message}}`;
    * routers written in Elixir (`CouncilEx.Router`): for each
      `{:council_route_call, run_pid, route_id, request}` it calls the
      router the request's `"options"` `"ref"` names (`route/3`) in a
      task and answers the run with
      `{:council_route_reply, route_id, {:ok, [member_id]} | {:error, message}}`.

  `CouncilEx.RunServer` starts one per run whose spec has Elixir-module
  members, Elixir function tools or Elixir routers (under
  `CouncilEx.MemberServer.Supervisor`) and passes it as the run's
  `:member_server`; it ends, killing unfinished calls, when the run ends.
  """
  use GenServer, restart: :temporary

  @typedoc """
  The Elixir tools of a run: `{member_id, tool_name}` => the function and
  its timeout in ms (see `tools_of/1`).
  """
  @type tools :: %{{binary, binary} => {(map -> term), pos_integer}}

  @default_tool_timeout_ms 30_000

  @doc """
  Starts a member server for a run with these beam members
  (`member_id => module`) and Elixir tools (`t:tools/0`). `extra` may give
  the run's Elixir routers (`routers:`, ref => function or module, see
  `CouncilEx.Spec.beam_routers/1` and `CouncilEx.Router.resolve/1`), and
  what they are shown: the run's `input:` and `user_opts:`.
  """
  @spec start_for_run!(%{binary => module}, [pid], tools, keyword) :: pid
  def start_for_run!(members, callers, tools \\ %{}, extra \\ []) do
    {:ok, pid} =
      DynamicSupervisor.start_child(
        CouncilEx.MemberServer.Supervisor,
        {__MODULE__, [members: members, callers: callers, tools: tools] ++ extra}
      )

    pid
  end

  @doc """
  Runs one route call of the core (the request of a `:council_route_call`)
  with `router` and returns the reply that is sent to the run: the router
  is given `input` and the context `CouncilEx.Router` describes.
  """
  @spec route((term, map -> term) | module | nil, map, keyword) ::
          {:ok, [binary]} | {:error, binary}
  def route(nil, request, _run) do
    ref = get_in(request, ["options", "ref"])
    {:error, "no Elixir router #{inspect(ref)} in this run"}
  end

  def route(router, request, run) do
    round = Map.get(request, "round", %{})

    ctx = %{
      run_id: request["run_id"],
      council: request["council"],
      round: %{name: round["name"], idx: round["idx"], type: round["type"]},
      members: Map.get(request, "members", []),
      rounds: Enum.map(Map.get(request, "rounds", []), &atom_keys/1),
      user_opts: Keyword.get(run, :user_opts)
    }

    input = Keyword.get(run, :input, request["input"])
    CouncilEx.Router.call(router, input, ctx)
  end

  # Round results in a request are JSON (binary keys); a router sees them
  # as results read elsewhere (atom keys, status atoms).
  @result_keys Map.new(
                 ~w(name idx type members aggregate text usage duration_us member_id status
                    attempts error parsed error_kind provider_us input_tokens output_tokens
                    cost)a,
                 &{Atom.to_string(&1), &1}
               )
  @statuses Map.new(~w(ok error skipped)a, &{Atom.to_string(&1), &1})

  defp atom_keys(%{} = map) do
    Map.new(map, fn {k, v} ->
      key = Map.get(@result_keys, k, k)
      {key, atom_value(key, v)}
    end)
  end

  defp atom_value(:members, list) when is_list(list), do: Enum.map(list, &atom_keys/1)
  defp atom_value(:usage, %{} = u), do: atom_keys(u)
  defp atom_value(:status, s) when is_map_key(@statuses, s), do: @statuses[s]
  defp atom_value(_key, v), do: v

  @doc """
  The Elixir tools of a spec (`CouncilEx.Spec.beam_tools/1`) as this server
  takes them: each function with its member's `tool_timeout_ms` option
  (default 30000, the C node's), after which the call is given up.
  """
  @spec tools_of(CouncilEx.Spec.t()) :: tools
  def tools_of(%CouncilEx.Spec{} = spec) do
    timeouts = Map.new(spec.members, &{&1.id, tool_timeout(&1.options)})

    for {member_id, tools} <- CouncilEx.Spec.beam_tools(spec),
        {name, fun} <- tools,
        into: %{},
        do: {{member_id, name}, {fun, timeouts[member_id]}}
  end

  defp tool_timeout(%{"tool_timeout_ms" => ms}) when is_integer(ms) and ms > 0, do: ms
  defp tool_timeout(_options), do: @default_tool_timeout_ms

  @doc "Starts a member server (see `start_for_run!/3`)."
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

  @doc """
  Runs one tool call and returns the reply that is sent to the run (used
  by the tasks; handy in tests). `arguments` is the JSON text the model
  wrote: a JSON object, given to `fun` as a map with binary keys (empty
  text is `%{}`). `fun` runs in a process of its own, killed after
  `timeout` ms. What it returns becomes the tool's result: a binary as is,
  `{:ok, value}` as `value` would, `{:error, reason}` an error result, any
  other term its JSON text (an error result when it has none). A raise, a
  throw or an exit is an error result with its message.

      iex> CouncilEx.MemberServer.run_tool(&Map.fetch!(&1, "q"), ~s({"q": "hi"}), 1_000)
      {:ok, "hi"}
  """
  @spec run_tool((map -> term), binary, timeout) :: {:ok, binary} | {:error, binary}
  def run_tool(fun, arguments, timeout) when is_function(fun, 1) and is_binary(arguments) do
    with {:ok, args} <- tool_arguments(arguments) do
      trap = Process.flag(:trap_exit, true)

      task = Task.Supervisor.async(CouncilEx.MemberServer.Tasks, fn -> apply_tool(fun, args) end)

      reply =
        case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
          {:ok, reply} -> reply
          {:exit, reason} -> {:error, "tool exited: " <> Exception.format_exit(reason)}
          nil -> {:error, "tool timed out after #{timeout} ms"}
        end

      # The link kept the function's process from outliving this one; its
      # exit signal (a message while trapping) is dropped with it.
      Process.unlink(task.pid)

      receive do
        {:EXIT, pid, _} when pid == task.pid -> :ok
      after
        0 -> :ok
      end

      Process.flag(:trap_exit, trap)
      reply
    end
  end

  defp tool_arguments(text) do
    if String.trim(text) == "" do
      {:ok, %{}}
    else
      case CouncilEx.JSON.decode(text) do
        {:ok, map} when is_map(map) -> {:ok, map}
        {:ok, _other} -> {:error, "tool arguments must be a JSON object, got: " <> clip(text)}
        {:error, _} -> {:error, "tool arguments are not valid JSON: " <> clip(text)}
      end
    end
  end

  defp apply_tool(fun, args) do
    tool_result(fun.(args))
  rescue
    e -> {:error, Exception.message(e)}
  catch
    kind, reason -> {:error, Exception.format_banner(kind, reason)}
  end

  defp tool_result(text) when is_binary(text), do: {:ok, text}
  defp tool_result({:ok, value}), do: tool_result(value)
  defp tool_result({:error, reason}), do: {:error, reason_text(reason)}

  defp tool_result(value) do
    case CouncilEx.JSON.encode(value) do
      {:ok, json} ->
        {:ok, json}

      {:error, _} ->
        {:error, "the tool returned a term with no JSON form: " <> clip(inspect(value))}
    end
  end

  defp clip(text) when byte_size(text) > 200, do: String.slice(text, 0, 200) <> "..."
  defp clip(text), do: text

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    {:ok,
     %{
       members: Keyword.fetch!(opts, :members),
       callers: Keyword.get(opts, :callers, []),
       tools: Keyword.get(opts, :tools, %{}),
       routers: Keyword.get(opts, :routers, %{}),
       run_info: Keyword.take(opts, [:input, :user_opts]),
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

  def handle_info({:council_tool_call, run_pid, id, member_id, name, arguments}, state)
      when is_pid(run_pid) and is_integer(id) and is_binary(member_id) and is_binary(name) and
             is_binary(arguments) do
    tool = Map.get(state.tools, {member_id, name})
    callers = state.callers

    {:ok, task} =
      Task.Supervisor.start_child(CouncilEx.MemberServer.Tasks, fn ->
        Process.put(:"$callers", callers)

        reply =
          case tool do
            {fun, timeout} ->
              run_tool(fun, arguments, timeout)

            nil ->
              {:error,
               "no Elixir function for tool #{inspect(name)} of member #{inspect(member_id)}"}
          end

        send(run_pid, {:council_tool_reply, id, reply})
      end)

    ref = Process.monitor(task)
    {:noreply, %{state | tasks: Map.put(state.tasks, ref, task)}}
  end

  def handle_info({:council_route_call, run_pid, id, request}, state)
      when is_pid(run_pid) and is_integer(id) and is_map(request) do
    router = Map.get(state.routers, get_in(request, ["options", "ref"]))
    run_info = state.run_info
    callers = state.callers

    {:ok, task} =
      Task.Supervisor.start_child(CouncilEx.MemberServer.Tasks, fn ->
        Process.put(:"$callers", callers)
        send(run_pid, {:council_route_reply, id, route(router, request, run_info)})
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
