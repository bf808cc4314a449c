defmodule CouncilEx.PubSub.Relay do
  @moduledoc """
  This node's relay of run events (one process per node, started by the
  application).

  It subscribes once per topic at the C node (`{:subscribe, topic, relay}`),
  receives each event once, turns round names and councils back into atoms
  (`CouncilEx.Wire.event/1`) and sends it to every local subscriber of the
  topic, in the order received. It monitors subscribers: one that exits is
  removed, and the C node subscription of a topic is dropped when its last
  local subscriber leaves. When the C node goes down its subscriptions are
  forgotten.

  Runs started with `subscribe: true` use `prepare/2`: the subscriber is
  registered here first, and the relay is passed in the run's `:subscribe`
  list so the C node subscribes it before the run starts.
  """
  use GenServer
  require Logger

  @events [
    :run_started,
    :round_started,
    :member_started,
    :member_token,
    :member_completed,
    :round_completed,
    :run_completed,
    :run_failed,
    :run_cancelled
  ]

  @doc "Starts the relay (registered as `CouncilEx.PubSub.Relay`)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Subscribes `pid` to `topic`; subscribes the relay at the C node if needed."
  @spec subscribe(binary, pid) :: :ok | {:error, term}
  def subscribe(topic, pid), do: GenServer.call(__MODULE__, {:subscribe, topic, pid}, 30_000)

  @doc "Unsubscribes `pid` from `topic`."
  @spec unsubscribe(binary, pid) :: :ok
  def unsubscribe(topic, pid), do: GenServer.call(__MODULE__, {:unsubscribe, topic, pid}, 30_000)

  @doc """
  Registers `pid` locally for a run about to start. Returns the pids to put
  in the run's `:subscribe` option (the relay, or `[]` when the relay is
  already subscribed to that topic). Follow with `confirm/2` or `abort/2`.
  """
  @spec prepare(binary, pid) :: [pid]
  def prepare(topic, pid), do: GenServer.call(__MODULE__, {:prepare, topic, pid}, 30_000)

  @doc "The run started: the C node subscribed the relay to `topic`."
  @spec confirm(binary, node) :: :ok
  def confirm(topic, node), do: GenServer.cast(__MODULE__, {:confirm, topic, node})

  @doc "The run did not start: undo `prepare/2`."
  @spec abort(binary, pid) :: :ok
  def abort(topic, pid), do: GenServer.call(__MODULE__, {:abort, topic, pid}, 30_000)

  @doc "Local subscribers of a topic (for tests and introspection)."
  @spec subscribers(binary) :: [pid]
  def subscribers(topic), do: GenServer.call(__MODULE__, {:subscribers, topic})

  @doc "Counts: topics, local subscriptions, C node subscriptions."
  @spec stats() :: map
  def stats, do: GenServer.call(__MODULE__, :stats)

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(_opts) do
    :net_kernel.monitor_nodes(true, node_type: :all)
    # subs: topic => %{pid => true}; watched: pid => {ref, MapSet of topics}
    # remote: topic => node | :pending
    # forwarders: topic => pid (sub-council topics, see remote_subscribe/2)
    {:ok, %{subs: %{}, watched: %{}, remote: %{}, forwarders: %{}}}
  end

  @impl true
  def handle_call({:subscribe, topic, pid}, _from, state) do
    state = add_local(state, topic, pid)

    case Map.get(state.remote, topic) do
      nil ->
        case remote_subscribe(state, topic) do
          {:ok, node, state} ->
            {:reply, :ok, put_in(state.remote[topic], node)}

          {{:error, _} = error, state} ->
            {:reply, error, remove_local(state, topic, pid, false)}
        end

      _node_or_pending ->
        {:reply, :ok, state}
    end
  end

  def handle_call({:unsubscribe, topic, pid}, _from, state) do
    {:reply, :ok, remove_local(state, topic, pid, true)}
  end

  def handle_call({:prepare, topic, pid}, _from, state) do
    state = add_local(state, topic, pid)

    case Map.get(state.remote, topic) do
      nil -> {:reply, [self()], put_in(state.remote[topic], :pending)}
      _ -> {:reply, [], state}
    end
  end

  def handle_call({:abort, topic, pid}, _from, state) do
    state =
      if state.remote[topic] == :pending,
        do: %{state | remote: Map.delete(state.remote, topic)},
        else: state

    state = remove_local(state, topic, pid, true)

    # Others subscribed meanwhile and relied on the pending subscription.
    state =
      if Map.has_key?(state.subs, topic) and not Map.has_key?(state.remote, topic) do
        case remote_subscribe(state, topic) do
          {:ok, node, state} -> put_in(state.remote[topic], node)
          {_error, state} -> state
        end
      else
        state
      end

    {:reply, :ok, state}
  end

  def handle_call({:subscribers, topic}, _from, state) do
    {:reply, state.subs |> Map.get(topic, %{}) |> Map.keys(), state}
  end

  def handle_call(:stats, _from, state) do
    {:reply,
     %{
       topics: map_size(state.subs),
       subscriptions: state.subs |> Map.values() |> Enum.map(&map_size/1) |> Enum.sum(),
       remote: map_size(state.remote)
     }, state}
  end

  @impl true
  def handle_cast({:confirm, topic, node}, state) do
    case state.remote[topic] do
      :pending -> {:noreply, put_in(state.remote[topic], node)}
      _ -> {:noreply, state}
    end
  end

  @impl true
  def handle_info(event, state)
      when is_tuple(event) and tuple_size(event) >= 3 and elem(event, 0) in @events do
    run_id = elem(event, 1)

    if is_binary(run_id) do
      dispatch(state, CouncilEx.Wire.topic(run_id), CouncilEx.Wire.event(event))
    end

    {:noreply, state}
  end

  def handle_info({:council_ex_event, topic, {:council_ex_overflow, _, _} = msg}, state)
      when is_binary(topic) do
    handle_info(msg, state)
  end

  def handle_info({:council_ex_event, topic, event}, state) when is_binary(topic) do
    dispatch(state, topic, CouncilEx.Wire.event(event))
    {:noreply, state}
  end

  def handle_info({:council_ex_overflow, topic, dropped} = msg, state) when is_binary(topic) do
    Logger.warning("council_ex: relay cut off from #{topic} after #{dropped} dropped events")
    dispatch(state, topic, msg)
    {:noreply, state |> stop_forwarder(topic) |> Map.update!(:remote, &Map.delete(&1, topic))}
  end

  def handle_info({:DOWN, ref, :process, pid, _reason}, state) do
    case state.watched do
      %{^pid => {^ref, topics}} ->
        state = %{state | watched: Map.delete(state.watched, pid)}
        {:noreply, Enum.reduce(topics, state, &drop_pid(&2, &1, pid, true))}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:nodedown, node, _info}, state) do
    gone = for {t, ^node} <- state.remote, do: t
    state = Enum.reduce(gone, state, &stop_forwarder(&2, &1))
    {:noreply, %{state | remote: Map.drop(state.remote, gone)}}
  end

  def handle_info({:nodeup, _node, _info}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state}

  # -------------------------------------------------------------- helpers

  defp dispatch(state, topic, message) do
    case state.subs do
      %{^topic => pids} -> Enum.each(pids, fn {pid, _} -> send(pid, message) end)
      _ -> :ok
    end
  end

  defp add_local(state, topic, pid) do
    subs = Map.update(state.subs, topic, %{pid => true}, &Map.put(&1, pid, true))

    watched =
      case state.watched do
        %{^pid => {ref, topics}} -> Map.put(state.watched, pid, {ref, MapSet.put(topics, topic)})
        _ -> Map.put(state.watched, pid, {Process.monitor(pid), MapSet.new([topic])})
      end

    %{state | subs: subs, watched: watched}
  end

  defp remove_local(state, topic, pid, remote?) do
    watched =
      case state.watched do
        %{^pid => {ref, topics}} ->
          topics = MapSet.delete(topics, topic)

          if MapSet.size(topics) == 0 do
            Process.demonitor(ref, [:flush])
            Map.delete(state.watched, pid)
          else
            Map.put(state.watched, pid, {ref, topics})
          end

        _ ->
          state.watched
      end

    drop_pid(%{state | watched: watched}, topic, pid, remote?)
  end

  defp drop_pid(state, topic, pid, remote?) do
    case state.subs do
      %{^topic => pids} ->
        pids = Map.delete(pids, pid)

        if map_size(pids) == 0 do
          state = %{state | subs: Map.delete(state.subs, topic)}

          case {remote?, Map.get(state.remote, topic)} do
            {true, node} when is_atom(node) and node not in [nil, :pending] ->
              remote_unsubscribe(node, topic, Map.get(state.forwarders, topic, self()))
              state = stop_forwarder(state, topic)
              %{state | remote: Map.delete(state.remote, topic)}

            _ ->
              state
          end
        else
          %{state | subs: Map.put(state.subs, topic, pids)}
        end

      _ ->
        state
    end
  end

  # Subscribes at the C node. Events carry a run id, not a topic: for a
  # run's own topic the relay finds the topic from the run id, but a
  # sub-council's events (topic "council_ex:run:<parent>:sub:<member>") carry
  # the sub-run's id, so those topics get a forwarder process that tags each
  # event with its topic before passing it on (order is kept: one sender).
  defp remote_subscribe(state, topic) do
    {target, state} =
      if String.contains?(topic, ":sub:") do
        relay = self()
        fwd = spawn_link(fn -> forward(relay, topic) end)
        {fwd, put_in(state.forwarders[topic], fwd)}
      else
        {self(), state}
      end

    reply =
      case CouncilEx.Node.await() do
        {:ok, node} ->
          try do
            case GenServer.call(
                   {CouncilEx.Node.service_name(), node},
                   {:subscribe, topic, target},
                   10_000
                 ) do
              :ok -> {:ok, node}
              {:error, _} = error -> error
              other -> {:error, other}
            end
          catch
            :exit, {reason, _} -> {:error, CouncilEx.Node.exit_reason(reason)}
          end

        error ->
          error
      end

    case reply do
      {:ok, node} -> {:ok, node, state}
      error -> {error, stop_forwarder(state, topic)}
    end
  end

  defp forward(relay, topic) do
    receive do
      msg -> send(relay, {:council_ex_event, topic, msg})
    end

    forward(relay, topic)
  end

  defp stop_forwarder(state, topic) do
    case Map.pop(state.forwarders, topic) do
      {nil, _} ->
        state

      {fwd, forwarders} ->
        Process.unlink(fwd)
        Process.exit(fwd, :kill)
        %{state | forwarders: forwarders}
    end
  end

  defp remote_unsubscribe(node, topic, target) do
    GenServer.call({CouncilEx.Node.service_name(), node}, {:unsubscribe, topic, target}, 10_000)
  catch
    :exit, _ -> :ok
  end
end
