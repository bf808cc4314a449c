defmodule CouncilEx.PubSub.Relay do
  @moduledoc """
  This node's relay of run events (one process per node, started by the
  application).

  It subscribes once per topic at the C node, as a tagged subscriber
  (`{:subscribe, topic, relay, :tagged}`, docs/protocol.md): every event
  arrives once, as `{:council_ex_event, topic, event}`, so the relay knows
  the topic of each event, also on a sub-council topic whose events carry
  the sub-run's own id. It turns round names and councils back into atoms
  (`CouncilEx.Wire.event/1`) and sends the plain event to every local
  subscriber of the topic, in the order received.

  Bookkeeping per topic ends

    * after the relay dispatched the terminal event (`:run_completed`,
      `:run_failed`, `:run_cancelled`) of the topic's own run, or an
      overflow notice: the C node has ended its subscription by then, so
      the topic's local subscribers are dropped too (subscribing again later
      subscribes anew). A sub-council topic sees one nested run per member
      call and stays subscribed until its subscribers leave;
    * when its last local subscriber unsubscribes or exits (subscribers are
      monitored): the relay unsubscribes at the C node;
    * when the C node goes down: its subscriptions are gone, and so are the
      topics subscribed there (their runs end for their callers with
      `:noconnection`).

  Runs started with `subscribe: true` subscribe through `subscribe/2`
  before the run is started: a topic may be subscribed before its run
  exists, so no event is missed.
  """
  use GenServer
  require Logger

  @terminal [:run_completed, :run_failed, :run_cancelled]

  @doc "Starts the relay (registered as `CouncilEx.PubSub.Relay`)."
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Subscribes `pid` to `topic`; subscribes the relay at the C node unless it
  already is for that topic. `:ok` or `{:error, reason}` (`:limit`,
  `:noconnection`, `:unavailable`, ...).
  """
  @spec subscribe(binary, pid) :: :ok | {:error, term}
  def subscribe(topic, pid) do
    # Wait for the C node here, not in the relay (which serves everyone).
    with {:ok, _node} <- CouncilEx.Node.await() do
      GenServer.call(__MODULE__, {:subscribe, topic, pid}, 30_000)
    end
  end

  @doc "Unsubscribes `pid` from `topic`. Always `:ok`."
  @spec unsubscribe(binary, pid) :: :ok
  def unsubscribe(topic, pid), do: GenServer.call(__MODULE__, {:unsubscribe, topic, pid}, 30_000)

  @doc "Local subscribers of a topic (for tests and introspection)."
  @spec subscribers(binary) :: [pid]
  def subscribers(topic), do: GenServer.call(__MODULE__, {:subscribers, topic})

  @doc """
  Counts: `:topics` (topics with local subscribers), `:subscriptions`
  (local topic/pid pairs), `:pids` (monitored local subscribers),
  `:remote` (topics the relay is subscribed to at a C node).
  """
  @spec stats() :: %{
          topics: non_neg_integer,
          subscriptions: non_neg_integer,
          pids: non_neg_integer,
          remote: non_neg_integer
        }
  def stats, do: GenServer.call(__MODULE__, :stats)

  # ------------------------------------------------------------- callbacks

  @impl true
  def init(_opts) do
    :net_kernel.monitor_nodes(true, node_type: :all)
    # subs: topic => %{pid => true}; watched: pid => {ref, MapSet of topics};
    # remote: topic => node the relay is subscribed at
    {:ok, %{subs: %{}, watched: %{}, remote: %{}}}
  end

  @impl true
  def handle_call({:subscribe, topic, pid}, _from, state) do
    state = add_local(state, topic, pid)

    if Map.has_key?(state.remote, topic) do
      {:reply, :ok, state}
    else
      case remote_subscribe(topic) do
        {:ok, node} ->
          {:reply, :ok, put_in(state.remote[topic], node)}

        {:error, _} = error ->
          {:reply, error, remove_local(state, topic, pid)}
      end
    end
  end

  def handle_call({:unsubscribe, topic, pid}, _from, state) do
    {:reply, :ok, remove_local(state, topic, pid)}
  end

  def handle_call({:subscribers, topic}, _from, state) do
    {:reply, state.subs |> Map.get(topic, %{}) |> Map.keys(), state}
  end

  def handle_call(:stats, _from, state) do
    {:reply,
     %{
       topics: map_size(state.subs),
       subscriptions: state.subs |> Map.values() |> Enum.map(&map_size/1) |> Enum.sum(),
       pids: map_size(state.watched),
       remote: map_size(state.remote)
     }, state}
  end

  @impl true
  def handle_info({:council_ex_event, topic, event}, state)
      when is_binary(topic) and is_tuple(event) and tuple_size(event) >= 3 do
    dispatch(state, topic, CouncilEx.Wire.event(event))

    # Only the topic's own run ends it: a sub-council topic carries one
    # nested run per member call, and the C node keeps that subscription.
    if elem(event, 0) in @terminal and topic == "council_ex:run:" <> elem(event, 1),
      do: {:noreply, drop_topic(state, topic)},
      else: {:noreply, state}
  end

  def handle_info({:council_ex_overflow, topic, dropped} = msg, state) when is_binary(topic) do
    Logger.warning("council_ex: relay cut off from #{topic} after #{dropped} dropped events")
    dispatch(state, topic, msg)
    {:noreply, drop_topic(state, topic)}
  end

  def handle_info({:DOWN, ref, :process, pid, _reason}, state) do
    case state.watched do
      %{^pid => {^ref, topics}} ->
        state = %{state | watched: Map.delete(state.watched, pid)}
        {:noreply, Enum.reduce(topics, state, &drop_pid(&2, &1, pid))}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:nodedown, node, _info}, state) do
    gone = for {topic, ^node} <- state.remote, do: topic
    {:noreply, Enum.reduce(gone, state, &drop_topic(&2, &1))}
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

  # `pid` leaves `topic` (unsubscribe, failed subscribe).
  defp remove_local(state, topic, pid) do
    drop_pid(%{state | watched: unwatch(state.watched, pid, topic)}, topic, pid)
  end

  # The topic's run ended (or the relay was cut off): the C node's
  # subscription is gone, forget the topic and its local subscribers.
  defp drop_topic(state, topic) do
    {pids, subs} = Map.pop(state.subs, topic, %{})
    watched = Enum.reduce(pids, state.watched, fn {pid, _}, w -> unwatch(w, pid, topic) end)
    %{state | subs: subs, watched: watched, remote: Map.delete(state.remote, topic)}
  end

  defp unwatch(watched, pid, topic) do
    case watched do
      %{^pid => {ref, topics}} ->
        topics = MapSet.delete(topics, topic)

        if MapSet.size(topics) == 0 do
          Process.demonitor(ref, [:flush])
          Map.delete(watched, pid)
        else
          Map.put(watched, pid, {ref, topics})
        end

      _ ->
        watched
    end
  end

  # Removes `pid` from the topic's subscribers; the last one to leave ends
  # the relay's subscription at the C node.
  defp drop_pid(state, topic, pid) do
    case state.subs do
      %{^topic => pids} ->
        pids = Map.delete(pids, pid)

        if map_size(pids) == 0 do
          {node, remote} = Map.pop(state.remote, topic)
          if node, do: remote_unsubscribe(node, topic)
          %{state | subs: Map.delete(state.subs, topic), remote: remote}
        else
          %{state | subs: Map.put(state.subs, topic, pids)}
        end

      _ ->
        state
    end
  end

  defp remote_subscribe(topic) do
    case CouncilEx.Node.current() do
      nil ->
        {:error, :noconnection}

      node ->
        case GenServer.call(
               {CouncilEx.Node.service_name(), node},
               {:subscribe, topic, self(), :tagged},
               10_000
             ) do
          :ok -> {:ok, node}
          {:error, _} = error -> error
          other -> {:error, other}
        end
    end
  catch
    :exit, {reason, _} -> {:error, CouncilEx.Node.exit_reason(reason)}
  end

  defp remote_unsubscribe(node, topic) do
    GenServer.call({CouncilEx.Node.service_name(), node}, {:unsubscribe, topic, self()}, 10_000)
  catch
    :exit, _ -> :ok
  end
end
