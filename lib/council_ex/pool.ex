defmodule CouncilEx.Pool do
  @moduledoc """
  Several C nodes behind one API: which node a request about a run goes
  to. `CouncilEx.Node` keeps the pool (which nodes are up, which drain)
  and publishes it here; `CouncilEx.Node.call/2` sends every request of
  the library through `call/2`.

  Configure the pool with one line (`CouncilEx.Node`):
  `config :council_ex, pool_size: 3` (three managed nodes on this
  machine) or `nodes: [:"council@host1", :"council@host2"]` (nodes you
  run); `node:` and the default (one managed node) are pools of one.

  ## Placement

  A new run goes to the first node of its run id's rendezvous order
  (`CouncilEx.Pool.Placement`) among the nodes that are up and not
  draining. Any BEAM node that knows the same node names computes the
  same order without asking anyone, so a lookup by id (`whereis/2`,
  `state/2`, `via/2`, `await/2`, `cancel/1` by id, `PubSub.subscribe/1`)
  is one call to that node. Registries span the pool: the node depends on
  the run id only, and each node keeps every registry's runs.

  On request (`placement: :least_loaded` in `CouncilEx.start/3`'s
  options) a run goes to the node with the fewest live runs, from each
  node's `:stats` (one call per node before the start). Such a run must
  still be found by id:

    * without `:run_id` (the usual case), the library picks the node first
      and then generates a run id whose first node is that one (about N
      random ids for N nodes, microseconds): the run is found by hashing,
      as any other, from any BEAM node;
    * with your own `:run_id`, the id cannot be chosen: the run is
      found by the lookups' fallback below (up to one call per node), and
      a start makes sure no other node has the id first (one call per
      node).

  ## Lookups

  A lookup by id asks the up nodes in the id's order and stops at the
  first that knows the run; a node that answers it does not know the id
  (or cannot be reached) passes the question to the next. A run that
  lives away from its first node (placed least-loaded under your own id,
  started while its first node was down or draining, or before a node was
  added that now ranks first) is found that way, at the cost of a call per
  node passed; an unknown id costs one call per node. A node that is slow
  (`:timeout`) ends the search with that answer: it may well have the run.

  A subscription to a run's topic (`CouncilEx.PubSub.subscribe/1`, by the
  relay) goes to the node that has the run (looked up in the default
  registry, as above), else to the node a start of that id would go to
  now: subscribing before the start works. A start from this BEAM node
  whose run goes to another node than the one its relay is subscribed at
  (the pool changed since the subscription, least-loaded placement)
  carries the relay's subscription to that node, and the relay follows
  the run there (`CouncilEx.PubSub.Relay`), so its subscribers miss no
  event. A start from another BEAM node does not know this one's
  subscriptions: subscribers here then get the run's events only when it
  lands on the node the id hashed to when they subscribed. A run of
  another registry is not looked for in the default registry: subscribe
  with `subscribe: true` at its start.

  ## Failure

  A node that is lost (killed, or its connection broken: `nodedown`)
  takes only its own runs: their callers get `:noconnection`, their
  subscribers `{:council_ex_down, topic, :noconnection}`. New runs whose
  first node it was go to the next node of their order; when the node is
  back (a managed node is restarted under the same name) it takes its
  share of new runs again.

  No run id is started twice:

    * a start goes to one node, chosen from the nodes that are up as
      `net_kernel` sees them; a node that is only slow is still up, so
      nothing else is tried: its start answers `{:error, :timeout}`, never
      starts the id elsewhere (the node may still make the run, found by
      id then; a `start_link` asks that node for the id afterwards and
      unlinks and cancels a run it finds linked to the caller, so no run
      the caller does not know is linked to it). A start to a node lost while it was under
      way answers `{:error, :noconnection}` (it is not retried
      elsewhere: the node may have made the run just before). Each node's
      registry refuses an id it has (`{:error, {:already_started, pid}}`,
      or `{:error, :run_id_retained}` for a run that has ended);
    * after any change of the pool (a node lost or back, added, removed,
      drained or undrained), an id may already live on a node other than
      the one a start now picks: for the retention window
      (`CouncilEx.Node.retention_ms/0`) after the change, a start first
      asks the other up nodes whether they have the id (one call per
      node) and answers as that node would (`{:error, {:already_started,
      pid}}`, `{:error, :run_id_retained}`) when one has, and
      `{:error, :timeout}` (starting nothing) when one does not answer
      in time: a slow node may have it. So does every least-loaded start
      under your own id.

    * a least-loaded run under your own id that lands away from its id's
      first node does the same on this BEAM node: for the retention
      window, starts check the other nodes.

  What is left: two starts of one id racing on two BEAM nodes that see
  the pool differently in the same instant (one has seen a node go down,
  the other not yet) can both succeed; a least-loaded run under your own
  id is checked for by later starts on the BEAM node that placed it, not
  on the others; and a run that outlives the retention window after a
  change while away from its first node is not looked for by a later
  start of its id.
  """

  alias CouncilEx.Pool.Placement

  @view_key {__MODULE__, :view}
  @empty_view %{ready: false, up: [], accepting: [], members: 0, unsettled_until: nil}
  @by_id [:whereis, :state, :result, :cancel]
  @topic_prefix CouncilEx.Schema.topic_prefix()

  @typedoc """
  The pool as `CouncilEx.Node` publishes it: `up` (nodes up, in pool
  order), `accepting` (up and not draining), `ready` (every node has had
  its first try), `members`, `unsettled_until` (monotonic ms: until then,
  starts check the other nodes for their id).
  """
  @type view :: %{
          ready: boolean,
          up: [node],
          accepting: [node],
          members: non_neg_integer,
          unsettled_until: integer | nil
        }

  @doc "The pool as last published (never blocks)."
  @spec view() :: view
  def view, do: :persistent_term.get(@view_key, @empty_view)

  @doc false
  # Publishes the pool (CouncilEx.Node). A persistent term is free to
  # read; it is written only when the pool changes.
  @spec put_view(view) :: :ok
  def put_view(view) do
    if view() != view, do: :persistent_term.put(@view_key, view)
    :ok
  end

  @doc false
  @spec erase_view() :: :ok
  def erase_view do
    :persistent_term.erase(@view_key)
    :ok
  end

  @doc """
  Sends a request of the C node service (docs/protocol.md) to the node
  that should answer it (see the module doc): starts to the run's node,
  requests by run id to the node that has the run, subscriptions to the
  node of the topic's run, anything else to the first node up.
  """
  @spec call(term, timeout) :: term
  def call(request, timeout) do
    case request do
      {how, %{} = opts} when how in [:start, :start_link] ->
        start(how, opts, timeout)

      {op, _registry, run_id} when op in @by_id and is_binary(run_id) ->
        lookup(request, run_id, timeout)

      {sub, topic, _pid} when sub in [:subscribe, :unsubscribe] and is_binary(topic) ->
        call_node(subscription_node(topic, timeout), request, timeout)

      {:subscribe, topic, _pid, _how} when is_binary(topic) ->
        call_node(subscription_node(topic, timeout), request, timeout)

      _ ->
        call_node(List.first(view().up), request, timeout)
    end
  end

  @doc """
  A run id for a start without one: random, or with `:least_loaded`
  placement, one whose first node is the least-loaded node now (see the
  module doc).
  """
  @spec new_run_id(:hash | :least_loaded | nil) :: binary
  def new_run_id(:least_loaded) do
    accepting = view().accepting

    if length(accepting) > 1 and not CouncilEx.Backend.nif?() do
      case least_loaded(accepting, 5_000) do
        nil -> CouncilEx.generate_run_id()
        node -> Placement.id_for(node, accepting, &CouncilEx.generate_run_id/0)
      end
    else
      CouncilEx.generate_run_id()
    end
  end

  def new_run_id(_placement), do: CouncilEx.generate_run_id()

  @doc """
  The node a start of the run of `topic` (or of a run id) goes to with
  hash placement now; nil when no node takes runs.
  """
  @spec start_node(binary) :: node | nil
  def start_node(topic_or_run_id) do
    Placement.owner(topic_run_id(topic_or_run_id), view().accepting)
  end

  @doc """
  The node that has the run `run_id` of `registry` (live or retained),
  asking the up nodes in the id's order; nil when none has it.
  """
  @spec locate(binary, binary, timeout) :: node | nil
  def locate(registry, run_id, timeout \\ 5_000) do
    Enum.find(Placement.rank(run_id, view().up), fn node ->
      match?(
        {:ok, _},
        call_node(node, {:state, registry, run_id}, timeout)
      )
    end)
  end

  @doc """
  The `:stats` of `nodes` (asked all at once), as `node => map`; a node
  that does not answer within `timeout` is left out.
  """
  @spec stats([node], timeout) :: %{node => map}
  def stats(nodes, timeout) do
    nodes
    |> multi_call(:stats, timeout)
    |> Enum.flat_map(fn
      {node, {:ok, %{} = stats}} -> [{node, stats}]
      _ -> []
    end)
    |> Map.new()
  end

  # ----------------------------------------------------------------- starts

  defp start(how, opts, timeout) do
    {placement, opts} = Map.pop(opts, :placement, :hash)
    view = view()

    # A run without an id gets one here in a pool, so that it is found by
    # hashing like any other (a lone node makes its own).
    opts =
      if Map.get(opts, :run_id) == nil and view.members > 1,
        do: Map.put(opts, :run_id, CouncilEx.generate_run_id()),
        else: opts

    case target(view, Map.get(opts, :run_id), placement, timeout) do
      nil ->
        {:error, :unavailable}

      node ->
        with :ok <- unique(view, node, opts, placement, timeout) do
          {opts, held} = carry(opts, node, view)
          reply = call_node(node, {how, opts}, timeout)
          late(reply, how, node, opts, timeout)
          away(reply, node, Map.get(opts, :run_id), view)
          follow(reply, held, opts)
          reply
        end
    end
  end

  # This BEAM node's relay is subscribed to the run's topic at another
  # node than the one the start goes to (subscribed before the start, and
  # the pool changed since, or least-loaded placement): the start carries
  # the relay's subscription, so that its subscribers get the run's events
  # from the first one, and the relay follows the run to its node
  # (`CouncilEx.PubSub.Relay`). `{opts, {relay, held_node} | nil}`.
  defp carry(%{run_id: id} = opts, node, %{members: members}) when is_binary(id) and members > 1 do
    case CouncilEx.PubSub.Relay.held(@topic_prefix <> id) do
      {relay, held} = carried when is_pid(relay) and held != node ->
        entry = {relay, :batched}
        {Map.update(opts, :subscribe, [entry], &Enum.uniq(&1 ++ [entry])), carried}

      _ ->
        {opts, nil}
    end
  end

  defp carry(opts, _node, _view), do: {opts, nil}

  defp follow({:ok, run}, {relay, held}, %{run_id: id}),
    do: CouncilEx.PubSub.Relay.follow(relay, @topic_prefix <> id, held, run)

  defp follow(_reply, _held, _opts), do: :ok

  # A start_link that its node answers after `timeout` (a slow node) still
  # makes the run and links it to the caller, which got `{:error,
  # :timeout}`, does not know the run and would get its exit. A node
  # answers one sender's requests in order, so a lookup of the id sent to
  # it now is answered after that start: a run of the id linked to the
  # caller is the late start's, and it is unlinked and cancelled. When the
  # lookup does not come back within `timeout` either, nothing is done.
  defp late({:error, :timeout}, :start_link, node, %{run_id: id} = opts, timeout)
       when is_binary(id) do
    registry = Map.get(opts, :registry, CouncilEx.Schema.default_registry())

    with {:ok, pid} <- call_node(node, {:whereis, registry, id}, timeout),
         {:links, links} <- Process.info(self(), :links),
         true <- pid in links do
      CouncilEx.Backend.unlink_flush(pid)
      GenServer.cast(pid, :cancel)
    end

    :ok
  end

  defp late(_reply, _how, _node, _opts, _timeout), do: :ok

  # A run placed away from its id's first node (least-loaded under the
  # caller's own id): from now on, and for the retention window, starts
  # here check the other nodes for their id.
  defp away({:ok, _pid}, node, id, view) when is_binary(id) do
    if Placement.owner(id, view.accepting) != node, do: CouncilEx.Node.unsettle()
  end

  defp away(_reply, _node, _id, _view), do: :ok

  defp target(%{accepting: []}, _id, _placement, _timeout), do: nil
  defp target(%{accepting: [node]}, _id, _placement, _timeout), do: node

  defp target(%{accepting: accepting}, id, :least_loaded, timeout) do
    least_loaded(accepting, timeout) || target(%{accepting: accepting}, id, :hash, timeout)
  end

  defp target(%{accepting: [first | _]}, nil, _placement, _timeout), do: first
  defp target(%{accepting: accepting}, id, _placement, _timeout), do: Placement.owner(id, accepting)

  defp least_loaded(nodes, timeout) do
    loads = stats(nodes, timeout)

    nodes
    |> Enum.flat_map(fn node ->
      case loads do
        %{^node => %{runs_alive: alive}} -> [{node, alive}]
        _ -> []
      end
    end)
    |> Placement.least_loaded()
  end

  # :ok when no other up node has the run id, or when no such node can be
  # (see "No run id is started twice" in the module doc). A node that does
  # not say within `timeout` whether it has the id (a slow node) may well
  # have it: the start answers `{:error, :timeout}` and starts nothing.
  defp unique(view, node, opts, placement, timeout) do
    others = List.delete(view.up, node)
    id = Map.get(opts, :run_id)

    if others != [] and is_binary(id) and (placement == :least_loaded or unsettled?(view)) do
      registry = Map.get(opts, :registry, CouncilEx.Schema.default_registry())
      replies = multi_call(others, {:state, registry, id}, timeout)

      cond do
        holder = Enum.find_value(replies, fn {node, reply} -> match?({:ok, _}, reply) && node end) ->
          taken(holder, registry, id, timeout)

        Enum.any?(replies, &match?({_, {:error, :timeout}}, &1)) ->
          {:error, :timeout}

        true ->
          :ok
      end
    else
      :ok
    end
  end

  # The refusal of a start whose id `node` has, as that node's own start
  # would answer it: the running run's pid, or a retained id.
  defp taken(node, registry, id, timeout) do
    case call_node(node, {:whereis, registry, id}, timeout) do
      {:ok, pid} -> {:error, {:already_started, pid}}
      {:error, :timeout} = slow -> slow
      _ -> {:error, :run_id_retained}
    end
  end

  defp unsettled?(%{unsettled_until: nil}), do: false

  defp unsettled?(%{unsettled_until: until}),
    do: System.monotonic_time(:millisecond) < until

  # ---------------------------------------------------------------- lookups

  defp lookup(request, run_id, timeout) do
    case view().up do
      [] -> {:error, :noconnection}
      [node] -> call_node(node, request, timeout)
      up -> ask(Placement.rank(run_id, up), request, timeout, nil)
    end
  end

  # Asks nodes in order until one knows the run; when none does, the
  # first node's answer.
  defp ask([node | rest], request, timeout, first) do
    reply = call_node(node, request, timeout)

    cond do
      not miss?(reply) -> reply
      rest == [] -> first || reply
      true -> ask(rest, request, timeout, first || reply)
    end
  end

  defp miss?({:error, reason}) when reason in [:unknown_run, :not_found, :noconnection, :noproc],
    do: true

  defp miss?(_reply), do: false

  @doc """
  The node for a subscription to `topic`: the one that has its run (in
  the default registry), else the one a start of that run id would go to
  now; nil when no node is up.
  """
  @spec subscription_node(binary, timeout) :: node | nil
  def subscription_node(topic, timeout) do
    view = view()

    case view.up do
      [] ->
        nil

      [node] ->
        node

      up ->
        id = topic_run_id(topic)

        locate(CouncilEx.Schema.default_registry(), id, timeout) ||
          Placement.owner(id, view.accepting) || Placement.owner(id, up)
    end
  end

  @doc false
  # The run id of a topic: "council_ex:run:" <> id, or the parent run's id
  # for a sub-council topic (id <> ":sub:" <> member), whose nested runs
  # live on the parent's node.
  @spec topic_run_id(binary) :: binary
  def topic_run_id(@topic_prefix <> rest) do
    case :binary.split(rest, ":sub:") do
      [parent, _member] -> parent
      [id] -> id
    end
  end

  def topic_run_id(other), do: other

  # ------------------------------------------------------------------ calls

  defp call_node(nil, _request, _timeout), do: {:error, :noconnection}

  defp call_node(node, request, timeout) do
    GenServer.call({CouncilEx.Node.service_name(), node}, request, timeout)
  catch
    :exit, {reason, _} -> {:error, CouncilEx.Node.exit_reason(reason)}
  end

  # `request` to each node's service at once: `{node, reply}` pairs,
  # `{:error, reason}` for a node that did not answer in time.
  defp multi_call(nodes, request, timeout) do
    name = CouncilEx.Node.service_name()
    reqs = Enum.map(nodes, &{&1, :gen_server.send_request({name, &1}, request)})
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout

    Enum.map(reqs, fn {node, req} ->
      wait = if deadline == :infinity, do: :infinity, else: max(deadline - now(), 0)

      case :gen_server.receive_response(req, wait) do
        {:reply, reply} -> {node, reply}
        :timeout -> {node, {:error, :timeout}}
        {:error, {reason, _}} -> {node, {:error, CouncilEx.Node.exit_reason(reason)}}
      end
    end)
  end

  defp now, do: System.monotonic_time(:millisecond)
end
