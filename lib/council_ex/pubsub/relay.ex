defmodule CouncilEx.PubSub.Relay do
  @moduledoc """
  This node's relay of run events (one process per node, started by the
  application).

  It subscribes once per topic at the C node, as a batched subscriber
  (`{:subscribe, topic, relay, :batched}`, docs/protocol.md): every event
  arrives once, in `{:council_ex_events, topic, [event, ...]}` (the events
  the C node made for the topic in one turn of its loop, in order), so the
  relay knows the topic of each event, also on a sub-council topic whose
  events carry the sub-run's own id, and takes one message per batch
  instead of one per event. It also takes `{:council_ex_event, topic,
  event}`, the tagged form, one event per message. It turns round names and councils back into atoms
  (`CouncilEx.Wire.event/1`) and sends the plain event to every local
  subscriber of the topic, in the order received. Every event tuple is
  relayed, whatever its tag (the tool events too, and tags a newer C node
  may add); only the three terminal tags end a topic.

  Bookkeeping per topic ends

    * after the relay dispatched the terminal event (`:run_completed`,
      `:run_failed`, `:run_cancelled`) of the topic's own run: the C node
      has ended its subscription by then, so the topic's local subscribers
      are dropped too (subscribing again later subscribes anew). An
      overflow notice (this node fell behind) is dispatched and ends
      nothing: after it the C node sends only terminal events, so the
      run's terminal event still ends the topic. A sub-council topic sees
      one nested run per member call and stays subscribed until its
      subscribers leave;
    * when its last local subscriber unsubscribes or exits (subscribers are
      monitored): the relay unsubscribes at the C node;
    * when the C node goes down (killed, lost or stopped): its
      subscriptions are gone, and so are the topics subscribed there (their
      runs end for their callers with `:noconnection`). Each local
      subscriber of such a topic is told once, with
      `{:council_ex_down, topic, :noconnection}` (see `CouncilEx.PubSub`),
      so that nobody waits for a terminal event that cannot come; a start
      under way with `subscribe: true` gets that notice after the events
      held for it, if the start succeeds. In a pool, a start under way
      whose request carries the relay's subscription is not ended by the
      loss of a node it was not sent to: its run may be made on another
      node, and is then followed there (its caller is told of the loss
      only if the start fails, or when it was made on the lost node). A
      topic whose run's terminal event was dispatched before the node went
      down was dropped already: its subscribers get no notice.

  In a pool of C nodes, a start from this BEAM node, with or without
  `subscribe: true`, whose run goes to another node than the one the
  relay is subscribed at for the run's topic (subscribed before the start,
  and the pool changed since, or least-loaded placement) carries the
  relay's subscription in its request (`CouncilEx.Pool` reads where the
  relay is subscribed from a protected ETS table the relay keeps), and the
  relay then leaves the other node and follows the run: its subscribers
  miss no event.

  The relay's state (subscribers, topics, starts under way) lives in this
  process only: a relay that exits and is restarted starts empty, and the
  subscribers of the old one are not told (see `CouncilEx.PubSub`).

  Runs started with `subscribe: true` go through `start_subscribed/3`: the
  caller is registered here (local bookkeeping, no call to the C node) and,
  unless the relay is already subscribed to the run's topic at the C node,
  the start request itself carries `{relay, :batched}` in its `:subscribe`
  list, so the C node subscribes the relay before the run begins and no
  event is missed. In a pool of C nodes it carries it also when the relay
  is subscribed already (at the node the run id hashed to when it
  subscribed; a node counts a subscription once): if the run lands on
  another node, the relay is subscribed there from the run's start and
  leaves the other node when the start answers. Until the start has
  answered, the events of the topic are held back for that caller:
  delivered, in order, when the start succeeds, discarded when it fails
  (e.g. `{:already_started, pid}`: the caller never sees an event of the
  run that holds the id).
  """
  use GenServer
  require Logger

  @terminal [:run_completed, :run_failed, :run_cancelled]
  @remote_table CouncilEx.PubSub.Relay.Remote

  @doc "Starts the relay (registered as `CouncilEx.PubSub.Relay`)."
  @spec start_link(keyword) :: GenServer.on_start()
  # The message queue lives off the heap: a burst of events from the C node
  # (it can send far faster than 10 local subscribers take them) would
  # otherwise be scanned by every garbage collection of the relay, which
  # slows it down more the longer the queue grows (see bench/RESULTS.md,
  # event fan-out).
  def start_link(opts \\ []),
    do:
      GenServer.start_link(__MODULE__, opts,
        name: __MODULE__,
        spawn_opt: [message_queue_data: :off_heap]
      )

  @doc """
  Subscribes `pid` to `topic`; subscribes the relay at the C node unless it
  already is for that topic. In a pool, the node that has the topic's run
  is looked for by the calling process (`CouncilEx.Pool.subscription_node/2`:
  a call per node, up to 10 s for a slow one), so the relay does not wait
  on it. `:ok` or `{:error, reason}` (`:limit`,
  `:noconnection`, `:unavailable`, `{:relay_down, reason}` when the relay
  is not running, ...).
  """
  @spec subscribe(binary, pid) :: :ok | {:error, term}
  def subscribe(topic, pid) do
    # Wait for the C node here, and look for the node that has the topic's
    # run (in a pool, up to a call per node), not in the relay, which
    # serves everyone.
    with {:ok, _node} <- CouncilEx.Node.await() do
      relay_call({:subscribe, topic, pid, CouncilEx.Pool.subscription_node(topic, 10_000)}, 30_000)
    end
  end

  @doc """
  Starts a run with `pid` subscribed to its `topic` from its first event.

  Registers `pid` for `topic` with the relay (no call to the C node), then
  calls `start` with the entries to add to the start request's
  `:subscribe` list: `[{relay_pid, :batched}]` when the relay is not yet
  subscribed to `topic` at the C node, `[]` when it is. `start` returns
  `{:ok, run_pid}` or an error, which is returned as is. On success `pid`
  gets every event of the topic from the run's first one on (events that
  arrived while the start was under way are sent before this returns); on
  an error (or a raise) the registration is removed and the events held
  for `pid` meanwhile are discarded.

  `{:error, :unavailable}` when the C node is not up in time (`start` is
  not called then). `{:error, {:relay_down, reason}}` when the relay is
  not running (stopped, or restarting) or exits during the start (`reason`
  is its exit reason as a call saw it, e.g. `:noproc`): this never exits
  the caller. If the run was started but the relay that registered `pid`
  is gone before the start was recorded (so `pid` would not get the run's
  events), the run is unlinked from the calling process and cancelled
  before this returns the error: no run is left behind that nobody knows
  of.
  """
  @spec start_subscribed(binary, pid, ([{pid, :batched}] -> {:ok, pid} | term)) ::
          {:ok, pid} | term
  def start_subscribed(topic, pid, start) when is_binary(topic) and is_pid(pid) do
    with {:ok, _node} <- CouncilEx.Node.await(),
         relay when is_pid(relay) <-
           Process.whereis(__MODULE__) || {:error, {:relay_down, :noproc}},
         {:ok, ref, entries} <- relay_call(relay, {:start_begin, topic, pid}, 30_000) do
      result =
        try do
          start.(entries)
        catch
          kind, reason ->
            relay_call(relay, {:start_end, topic, ref, :error}, 30_000)
            :erlang.raise(kind, reason, __STACKTRACE__)
        end

      outcome =
        case result do
          {:ok, run} when is_pid(run) -> {:ok, run}
          _ -> :error
        end

      # The same relay process as start_begin's: a restarted relay would
      # not know this registration.
      case relay_call(relay, {:start_end, topic, ref, outcome}, 30_000) do
        :ok ->
          result

        {:error, _} = error ->
          with {:ok, run} <- outcome, do: abandon(run)
          error
      end
    end
  end

  # A run started for a registration the relay lost: nobody would get its
  # events, and the caller gets an error instead of its pid, so it is
  # unlinked (its exit must not reach the caller) and cancelled.
  defp abandon(run) do
    Process.unlink(run)

    if Process.info(self(), :trap_exit) == {:trap_exit, true} do
      receive do
        {:EXIT, ^run, _} -> :ok
      after
        0 -> :ok
      end
    end

    try do
      GenServer.call(run, :cancel, 10_000)
    catch
      :exit, _ -> :ok
    end

    :ok
  end

  # A call to the relay that returns `{:error, {:relay_down, reason}}`
  # instead of exiting when the relay is not running or exits meanwhile.
  defp relay_call(relay \\ __MODULE__, request, timeout) do
    GenServer.call(relay, request, timeout)
  catch
    :exit, {reason, {GenServer, :call, _}} -> {:error, {:relay_down, reason}}
  end

  @doc false
  # The relay and the C node it is subscribed at for `topic`, or nil
  # (CouncilEx.Pool: a start of a pool whose run may land elsewhere
  # carries the relay's subscription, then tells follow/4).
  @spec held(binary) :: {pid, node} | nil
  def held(topic) do
    case :ets.lookup(@remote_table, topic) do
      [{^topic, node}] -> {Process.whereis(__MODULE__), node}
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  @doc false
  # A start that carried the relay's subscription (see held/1) while the
  # relay was subscribed at `held` has made its run `run`: the relay
  # follows it to its node.
  @spec follow(pid, binary, node, pid) :: :ok
  def follow(relay, topic, held, run), do: GenServer.cast(relay, {:moved, topic, held, run})

  @doc "Unsubscribes `pid` from `topic`. Always `:ok`."
  @spec unsubscribe(binary, pid) :: :ok
  def unsubscribe(topic, pid) do
    # A relay that is not running has no subscription to end.
    case relay_call({:unsubscribe, topic, pid}, 30_000) do
      :ok -> :ok
      {:error, {:relay_down, _}} -> :ok
    end
  end

  @doc "Local subscribers of a topic (for tests and introspection)."
  @spec subscribers(binary) :: [pid]
  def subscribers(topic), do: GenServer.call(__MODULE__, {:subscribers, topic})

  @doc """
  Counts: `:topics` (topics with local subscribers), `:subscriptions`
  (local topic/pid pairs), `:pids` (monitored local subscribers),
  `:remote` (topics the relay is subscribed to at a C node), `:starts`
  (starts with `subscribe: true` under way).
  """
  @spec stats() :: %{
          topics: non_neg_integer,
          subscriptions: non_neg_integer,
          pids: non_neg_integer,
          remote: non_neg_integer,
          starts: non_neg_integer
        }
  def stats, do: GenServer.call(__MODULE__, :stats)

  # ------------------------------------------------------------- callbacks

  # State:
  #   subs:     topic => %{pid => true}        local subscribers (get events)
  #   watched:  pid => {monitor ref, topics}   topics where pid subscribes
  #                                            or has a start under way
  #   remote:   topic => node                  the relay is subscribed there
  #   inflight: topic => %{refs, waiters}
  #             starts (by ref) under way whose request carries the relay's
  #             subscription; the relay is subscribed once one succeeds.
  #             waiters: subscribe/2 calls answered when that is decided.
  #   pending:  topic => %{ref => %{pid, mode, buf, held, down}}
  #             starts under way, by the pid to subscribe. mode :buffer:
  #             events are held in buf (newest first); :direct: pid was a
  #             subscriber already; :ended: the topic ended meanwhile.
  #             held: the node the relay was subscribed at when a start
  #             of a pool carried its subscription anyway (moved/4), else
  #             nil. down: pid was a subscriber at a node lost while
  #             such a start was under way; it is told if the start fails.
  # A topic is in at most one of remote and inflight.

  @impl true
  def init(_opts) do
    :net_kernel.monitor_nodes(true, node_type: :all)
    # `remote` for readers outside (held/1): written here only
    :ets.new(@remote_table, [:named_table, :protected, :set, read_concurrency: true])
    {:ok, %{subs: %{}, watched: %{}, remote: %{}, inflight: %{}, pending: %{}, checks: %{}}}
  end

  @impl true
  def handle_call({:subscribe, topic, pid, node}, from, state) do
    state = add_subscriber(state, topic, pid)

    case state do
      %{remote: %{^topic => _}} ->
        {:reply, :ok, state}

      %{inflight: %{^topic => inflight}} ->
        # A start carrying the relay's subscription is under way: its
        # outcome decides (see settle_inflight/4).
        inflight = %{inflight | waiters: [from | inflight.waiters]}
        {:noreply, put_in(state.inflight[topic], inflight)}

      _ ->
        case remote_subscribe(topic, node) do
          {:ok, node} ->
            {:reply, :ok, put_remote(state, topic, node)}

          {:error, _} = error ->
            {:reply, error, remove_subscriber(state, topic, pid)}
        end
    end
  end

  def handle_call({:start_begin, topic, pid}, _from, state) do
    case CouncilEx.Node.current() do
      nil ->
        {:reply, {:error, :noconnection}, state}

      _up ->
        ref = make_ref()

        # Subscribed at a node that is gone (its nodedown not seen yet):
        # that subscription is lost.
        state =
          case state.remote do
            %{^topic => held} -> if connected?(held), do: state, else: node_lost(state, topic)
            _ -> state
          end

        mode = if subscribed?(state, topic, pid), do: :direct, else: :buffer
        # In a pool the run may land on another node than the one the
        # relay is subscribed at (its first node drains, a node was added,
        # least-loaded placement): the start carries the subscription
        # anyway (a node that has it already counts it once), and the
        # relay moves there when the start answers (start_end).
        held = if CouncilEx.Pool.view().members > 1, do: state.remote[topic]
        entry = %{pid: pid, mode: mode, buf: [], held: held, down: false, lost: []}
        pending = Map.update(state.pending, topic, %{ref => entry}, &Map.put(&1, ref, entry))
        state = watch(%{state | pending: pending}, pid, topic)

        cond do
          held != nil ->
            {:reply, {:ok, ref, [{self(), :batched}]}, state}

          Map.has_key?(state.remote, topic) ->
            {:reply, {:ok, ref, []}, state}

          true ->
            # Not subscribed yet, or only by starts still under way (one of
            # which may fail): this start carries the subscription too; the
            # C node keeps one subscription per topic and pid.
            inflight =
              Map.update(
                state.inflight,
                topic,
                %{refs: MapSet.new([ref]), waiters: []},
                &%{&1 | refs: MapSet.put(&1.refs, ref)}
              )

            {:reply, {:ok, ref, [{self(), :batched}]}, %{state | inflight: inflight}}
        end
    end
  end

  def handle_call({:start_end, topic, ref, outcome}, _from, state) do
    {entry, state} = pop_pending(state, topic, ref)

    state =
      case {outcome, entry} do
        {{:ok, _run}, %{mode: :buffer, pid: pid, buf: buf}} ->
          flush(pid, buf)
          add_subscriber(state, topic, pid)

        {{:ok, _run}, %{mode: :ended, pid: pid, buf: buf}} ->
          # The run ended before its start was answered: buf holds all of it.
          flush(pid, buf)
          state

        {_failed, %{down: true, pid: pid}} ->
          # its subscription went with a lost node while the start was
          # under way (drop_topic/4), and no run of it is followed now
          send(pid, {:council_ex_down, topic, :noconnection})
          state

        _ ->
          # :direct (a subscriber already), or a failed start: its held
          # events belong to another run (or to none) and are dropped.
          state
      end

    state = settle_inflight(state, topic, ref, outcome)
    state = moved(state, topic, entry, outcome)
    state = if entry, do: sync_watch(state, entry.pid, topic), else: state

    # The run was made at a node seen down while its start was under way
    # (its subscription, carried by the start, was not the relay's yet
    # when the nodedown came). Still down: its run is gone, and its
    # subscribers are told. Connected again (a managed node comes back
    # under its name): the run may be the new instance's, or a pid of the
    # lost one; a monitor tells (DOWN :noproc or :noconnection at once for
    # a pid that is gone), see the first :DOWN clause.
    state =
      case {outcome, entry} do
        {{:ok, run}, %{lost: lost}} ->
          cond do
            node(run) not in lost -> state
            not connected?(node(run)) -> node_lost(state, topic)
            true -> put_in(state.checks[Process.monitor(run)], topic)
          end

        _ ->
          state
      end

    {:reply, :ok, maybe_release(state, topic)}
  end

  def handle_call({:unsubscribe, topic, pid}, _from, state) do
    {:reply, :ok, remove_subscriber(state, topic, pid)}
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
       remote: map_size(state.remote),
       starts: state.pending |> Map.values() |> Enum.map(&map_size/1) |> Enum.sum()
     }, state}
  end

  @impl true
  def handle_cast({:moved, topic, held, run}, state) do
    {:noreply, state |> moved(topic, %{held: held}, {:ok, run}) |> maybe_release(topic)}
  end

  @impl true
  # One loop turn's events of a topic, in order (the batched subscription).
  def handle_info({:council_ex_events, topic, events}, state)
      when is_binary(topic) and is_list(events) do
    {:noreply, Enum.reduce(events, state, &relay_event(&2, topic, &1))}
  end

  def handle_info({:council_ex_event, topic, event}, state) when is_binary(topic),
    do: {:noreply, relay_event(state, topic, event)}

  # The C node keeps the subscription after the notice and sends only
  # terminal events from then on: the topic ends as usual with its run's.
  def handle_info({:council_ex_overflow, topic, dropped} = msg, state) when is_binary(topic) do
    Logger.warning("council_ex: relay cut off from #{topic} after #{dropped} dropped events")
    {:noreply, dispatch(state, topic, msg)}
  end

  # A run whose node was lost and back while its start was under way
  # (start_end): gone at once, it was the lost instance's.
  def handle_info({:DOWN, ref, :process, _run, reason}, %{checks: checks} = state)
      when is_map_key(checks, ref) do
    {topic, checks} = Map.pop(checks, ref)
    state = %{state | checks: checks}
    {:noreply, if(reason in [:noproc, :noconnection], do: node_lost(state, topic), else: state)}
  end

  def handle_info({:DOWN, ref, :process, pid, _reason}, state) do
    case state.watched do
      %{^pid => {^ref, topics}} ->
        state = %{state | watched: Map.delete(state.watched, pid)}
        {:noreply, Enum.reduce(topics, state, &forget_pid(&2, &1, pid))}

      _ ->
        {:noreply, state}
    end
  end

  # Only the topics subscribed at that node. A start under way that
  # carries the relay's subscription is not ended here: its run may be
  # made on another node of a pool (the start answers; settle_inflight/4
  # and moved/4 then see whether the run's node is still there).
  def handle_info({:nodedown, node, _info}, state) do
    gone = for {topic, ^node} <- state.remote, do: topic
    # starts under way remember it: one whose run turns out to be there
    # ends its topic when it is answered (start_end)
    pending =
      Map.new(state.pending, fn {topic, entries} ->
        {topic, Map.new(entries, fn {ref, e} -> {ref, %{e | lost: [node | e.lost]}} end)}
      end)

    {:noreply, Enum.reduce(gone, %{state | pending: pending}, &node_lost(&2, &1))}
  end

  def handle_info({:nodeup, _node, _info}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state}

  # -------------------------------------------------------------- helpers

  defp relay_event(state, topic, event) when is_tuple(event) and tuple_size(event) >= 3 do
    state = dispatch(state, topic, CouncilEx.Wire.event(event))

    # Only the topic's own run ends it: a sub-council topic carries one
    # nested run per member call, and the C node keeps that subscription.
    if elem(event, 0) in @terminal and topic == CouncilEx.Schema.topic_prefix() <> elem(event, 1),
      do: drop_topic(state, topic, :ok),
      else: state
  end

  defp relay_event(state, _topic, _other), do: state

  # Sends to the topic's subscribers; holds it for starts under way.
  defp dispatch(state, topic, message) do
    case state.subs do
      %{^topic => pids} -> Enum.each(pids, fn {pid, _} -> send(pid, message) end)
      _ -> :ok
    end

    case state.pending do
      %{^topic => entries} ->
        entries =
          Map.new(entries, fn
            {ref, %{mode: :buffer} = e} -> {ref, %{e | buf: [message | e.buf]}}
            other -> other
          end)

        put_in(state.pending[topic], entries)

      _ ->
        state
    end
  end

  defp flush(pid, buf), do: buf |> Enum.reverse() |> Enum.each(&send(pid, &1))

  defp subscribed?(state, topic, pid) do
    match?(%{^topic => %{^pid => _}}, state.subs)
  end

  # Makes pid a subscriber of topic (locally). Events held for a start of
  # pid's under way go out first, in order, and pid gets the next ones
  # directly.
  defp add_subscriber(state, topic, pid) do
    subs = Map.update(state.subs, topic, %{pid => true}, &Map.put(&1, pid, true))

    pending =
      case state.pending do
        %{^topic => entries} ->
          entries =
            Map.new(entries, fn
              {ref, %{pid: ^pid, mode: :buffer} = e} ->
                flush(pid, e.buf)
                {ref, %{e | mode: :direct, buf: []}}

              other ->
                other
            end)

          Map.put(state.pending, topic, entries)

        _ ->
          state.pending
      end

    watch(%{state | subs: subs, pending: pending}, pid, topic)
  end

  # pid leaves topic (unsubscribe, failed subscribe).
  defp remove_subscriber(state, topic, pid) do
    state
    |> delete_subscriber(topic, pid)
    |> sync_watch(pid, topic)
    |> maybe_release(topic)
  end

  defp delete_subscriber(state, topic, pid) do
    case state.subs do
      %{^topic => pids} ->
        pids = Map.delete(pids, pid)

        if map_size(pids) == 0,
          do: %{state | subs: Map.delete(state.subs, topic)},
          else: %{state | subs: Map.put(state.subs, topic, pids)}

      _ ->
        state
    end
  end

  defp pop_pending(state, topic, ref) do
    case state.pending do
      %{^topic => %{^ref => entry} = entries} ->
        entries = Map.delete(entries, ref)

        pending =
          if map_size(entries) == 0,
            do: Map.delete(state.pending, topic),
            else: Map.put(state.pending, topic, entries)

        {entry, %{state | pending: pending}}

      _ ->
        {nil, state}
    end
  end

  # A start whose request carried the relay's subscription has answered.
  # The first success means the relay is subscribed; once every such start
  # has failed it is not, and subscribers that came meanwhile need a
  # subscription of their own.
  defp settle_inflight(state, topic, ref, outcome) do
    case state.inflight do
      %{^topic => %{refs: refs} = inflight} ->
        cond do
          not MapSet.member?(refs, ref) ->
            state

          match?({:ok, _}, outcome) ->
            {:ok, run} = outcome
            reply_all(inflight.waiters, :ok)

            state =
              put_remote(%{state | inflight: Map.delete(state.inflight, topic)}, topic, node(run))

            # The run's node went down before the start was answered here
            # (its nodedown came, or comes, before this; it is another node
            # than the inflight one when the pool placed the run
            # least-loaded): the subscription is gone with it.
            if connected?(node(run)), do: state, else: node_lost(state, topic)

          MapSet.size(refs) > 1 ->
            put_in(state.inflight[topic], %{inflight | refs: MapSet.delete(refs, ref)})

          true ->
            state = %{state | inflight: Map.delete(state.inflight, topic)}
            resubscribe(state, topic, inflight.waiters)
        end

      _ ->
        state
    end
  end

  defp resubscribe(state, topic, waiters) do
    case state.subs do
      %{^topic => pids} ->
        case remote_subscribe(topic) do
          {:ok, node} ->
            reply_all(waiters, :ok)
            put_remote(state, topic, node)

          {:error, _} = error ->
            reply_all(waiters, error)

            Enum.reduce(Map.keys(pids), state, fn pid, st ->
              st |> delete_subscriber(topic, pid) |> sync_watch(pid, topic)
            end)
        end

      _ ->
        # The waiters are gone.
        reply_all(waiters, :ok)
        state
    end
  end

  defp reply_all(waiters, reply), do: Enum.each(waiters, &GenServer.reply(&1, reply))

  # A start that carried the relay's subscription while the relay was
  # subscribed at `held` (start_begin) has made its run at `at`: the relay
  # is subscribed there since the run began. It follows the run there,
  # and leaves `held` when that is another node (which has no run of the
  # topic). When `held` was lost meanwhile the topic was dropped, but not
  # for this start's caller (drop_topic/4), now a subscriber again: the
  # relay is subscribed at `at` for it.
  defp moved(state, topic, %{held: held}, {:ok, run}) when held != nil do
    at = node(run)

    case state.remote do
      %{^topic => ^at} ->
        state

      %{^topic => ^held} ->
        remote_unsubscribe(held, topic)
        state = put_remote(state, topic, at)
        if connected?(at), do: state, else: node_lost(state, topic)

      %{^topic => _other} ->
        state

      _ ->
        if at != held and connected?(held), do: remote_unsubscribe(held, topic)

        if Map.has_key?(state.subs, topic) and not Map.has_key?(state.inflight, topic) do
          state = put_remote(state, topic, at)
          if connected?(at), do: state, else: node_lost(state, topic)
        else
          state
        end
    end
  end

  defp moved(state, _topic, _entry, _outcome), do: state

  defp put_remote(state, topic, node) do
    :ets.insert(@remote_table, {topic, node})
    %{state | remote: Map.put(state.remote, topic, node)}
  end

  defp del_remote(state, topic) do
    :ets.delete(@remote_table, topic)
    %{state | remote: Map.delete(state.remote, topic)}
  end

  # The C node that held the topic's subscription went down: the topic is
  # dropped and its subscribers told (`{:council_ex_down, topic, reason}`).
  defp node_lost(state, topic) do
    drop_topic(state, topic, {:error, :noconnection}, {:council_ex_down, topic, :noconnection})
  end

  # The topic's run ended (or the relay was cut off, or the C node went
  # down): the C node's subscription is gone; forget the topic and its
  # local subscribers. Starts under way for it keep what they hold and
  # hold nothing more. `notice` (when the node went down) goes to each
  # local subscriber, except those whose subscribe/2 call is answered
  # with the error now, and is held, last, for the starts under way.
  defp drop_topic(state, topic, waiter_reply, notice \\ nil) do
    {pids, subs} = Map.pop(state.subs, topic, %{})
    state = del_remote(%{state | subs: subs}, topic)

    {state, answered} =
      case Map.pop(state.inflight, topic) do
        {nil, _} ->
          {state, []}

        {inflight, rest} ->
          reply_all(inflight.waiters, waiter_reply)
          {%{state | inflight: rest}, Enum.map(inflight.waiters, fn {pid, _tag} -> pid end)}
      end

    # Starts under way that carry the relay's subscription in a pool
    # (held) may make their run on another node than the lost one: they
    # go on holding the topic's events for their callers, who are told
    # of the loss only if the start fails (start_end).
    entries = Map.get(state.pending, topic, %{})

    carried =
      if notice, do: for({_, %{held: h, pid: pid}} when h != nil <- entries, do: pid), else: []

    if notice do
      for pid <- Map.keys(pids), pid not in answered, pid not in carried, do: send(pid, notice)
    end

    entries =
      Map.new(entries, fn
        {ref, %{held: h} = e} when notice != nil and h != nil ->
          {ref, %{e | mode: :buffer, down: e.down or Map.has_key?(pids, e.pid)}}

        {ref, %{mode: :buffer} = e} when notice != nil ->
          {ref, %{e | mode: :ended, buf: [notice | e.buf]}}

        {ref, e} ->
          {ref, %{e | mode: :ended}}
      end)

    state = if entries == %{}, do: state, else: put_in(state.pending[topic], entries)

    Enum.reduce(Map.keys(pids), state, &sync_watch(&2, &1, topic))
  end

  # A monitored pid is gone (its watched entry is removed already).
  # Its starts under way count as failed (if one did start a run with the
  # relay's subscription, the C node ends that subscription with the run).
  defp forget_pid(state, topic, pid) do
    state = delete_subscriber(state, topic, pid)
    refs = for {ref, %{pid: ^pid}} <- Map.get(state.pending, topic, %{}), do: ref

    refs
    |> Enum.reduce(state, fn ref, st ->
      {_entry, st} = pop_pending(st, topic, ref)
      settle_inflight(st, topic, ref, :error)
    end)
    |> maybe_release(topic)
  end

  defp watch(state, pid, topic) do
    watched =
      case state.watched do
        %{^pid => {ref, topics}} -> Map.put(state.watched, pid, {ref, MapSet.put(topics, topic)})
        _ -> Map.put(state.watched, pid, {Process.monitor(pid), MapSet.new([topic])})
      end

    %{state | watched: watched}
  end

  # pid stays watched for topic while it subscribes to it or has a start
  # under way for it.
  defp sync_watch(state, pid, topic) do
    keep =
      subscribed?(state, topic, pid) or
        Enum.any?(Map.get(state.pending, topic, %{}), fn {_, e} -> e.pid == pid end)

    case state.watched do
      %{^pid => {ref, topics}} when not keep ->
        topics = MapSet.delete(topics, topic)

        if MapSet.size(topics) == 0 do
          Process.demonitor(ref, [:flush])
          %{state | watched: Map.delete(state.watched, pid)}
        else
          %{state | watched: Map.put(state.watched, pid, {ref, topics})}
        end

      _ ->
        state
    end
  end

  # The relay leaves the C node's topic once nobody here needs it: no
  # subscriber, no start under way that counts on the subscription.
  defp maybe_release(state, topic) do
    needed =
      Map.has_key?(state.subs, topic) or
        Enum.any?(Map.get(state.pending, topic, %{}), fn {_, e} -> e.mode != :ended end)

    case state.remote do
      %{^topic => node} when not needed ->
        remote_unsubscribe(node, topic)
        del_remote(state, topic)

      _ ->
        state
    end
  end

  # At the node of the topic's run (CouncilEx.Pool.subscription_node/2,
  # asked by subscribe/2 in the subscriber's process, else here).
  defp remote_subscribe(topic, node \\ :find)

  defp remote_subscribe(topic, :find),
    do: remote_subscribe(topic, CouncilEx.Pool.subscription_node(topic, 10_000))

  defp remote_subscribe(_topic, nil), do: {:error, :noconnection}

  defp remote_subscribe(topic, node) do
    case GenServer.call(
           {CouncilEx.Node.service_name(), node},
           {:subscribe, topic, self(), :batched},
           10_000
         ) do
      :ok -> {:ok, node}
      {:error, _} = error -> error
      other -> {:error, other}
    end
  catch
    :exit, {reason, _} -> {:error, CouncilEx.Node.exit_reason(reason)}
  end

  defp connected?(node), do: node == node() or node in Node.list(:connected)

  defp remote_unsubscribe(node, topic) do
    GenServer.call({CouncilEx.Node.service_name(), node}, {:unsubscribe, topic, self()}, 10_000)
  catch
    :exit, _ -> :ok
  end
end
