defmodule CouncilEx.PubSub do
  @moduledoc """
  Subscriptions to run events (SPEC section 7).

      :ok = CouncilEx.PubSub.subscribe(run_id)
      receive do
        {:run_completed, ^run_id, result} -> result.final
      end

  A subscriber receives, in the order the run produced them:

      {:run_started, run_id, council, input}
      {:round_started, run_id, round_name, idx}
      {:member_started, run_id, round_name, member_id}
      {:member_token, run_id, round_name, member_id, chunk}
      {:member_completed, run_id, round_name, member_id, member_result}
      {:tool_call_request, run_id, round_name, member_id, tool_call}
      {:tool_call_result, run_id, round_name, member_id, tool_result}
      {:round_completed, run_id, round_name, round_result}
      {:run_completed, run_id, result}
      {:run_failed, run_id, errors, result}
      {:run_cancelled, run_id, result}

  Round names are atoms when the atom exists (DSL names, round types),
  else binaries; member ids and chunks are binaries. The maps
  (docs/protocol.md, "Shapes"):

    * `member_result`: `%{member_id, status, text, attempts, error,
      parsed, error_kind, usage}`; `status` is `:ok`, `:error`,
      `:timeout`, `:skipped` (left out by the round's `members` or its
      router: its `member_completed` comes right after `round_started`,
      with no `member_started`; or its call cut short by `failure_mode:
      :fail_fast`), `:invalid_output` or
      `:eliminated` (a pairwise loser); `error` is nil or a
      `%CouncilEx.Error{}`; `error_kind` is nil on success, else
      `:transient` (retried within the member's `max_attempts`),
      `:permanent`, `:validation` or `:cancelled`;
    * `round_result`: `%{name, idx, type, members, aggregate, text, usage}`;
    * `result`: `%{final, rounds, errors, usage}`, `errors` a list of
      `%CouncilEx.Error{}` (as in `run_failed`'s `errors`);
    * `usage`: `%{input_tokens: integer, output_tokens: integer,
      cost: float | nil}`, tokens as the model APIs report them (zeros for
      members that report none), summed over attempts and tool turns for a
      member, over members for a round, over the whole run for a result;
    * `tool_call` (a model member asks for a tool): `%{id, name,
      arguments}`, `arguments` being the JSON text the model wrote;
      `tool_result` (what the tool answered, given back to the model):
      the same plus `result: binary, status: :ok | :error`.

  Match the keys you need rather than whole maps: keys may be added.

  and these notices, each at most once per subscription:

    * `{:council_ex_overflow, topic, dropped_count}` if this node's
      subscription was cut off because it could not keep up (the C node's
      connection to this node held more than `--max-subscriber-backlog`
      bytes, or the core's queue bound was passed): the events after it
      are skipped, except the terminal ones, so the run's terminal event
      still follows the notice (with either backend);
    * `{:council_ex_down, topic, :noconnection}` if the C node serving the
      subscription went down (killed, connection lost, or stopped) before
      the run's terminal event reached this node. The run is gone with its
      node (callers of the run see `:noconnection`); `CouncilEx.Node`
      restarts the node, whose runs and topics start empty. A clean stop of
      the node (SIGTERM) cancels its runs first, so their subscribers get
      `run_cancelled` and no notice; a sub-council topic, which has no
      terminal event of its own, always gets the notice.

  A subscription to a run's topic ends by itself after that run's terminal
  event (or the `council_ex_down` notice): nothing follows it. Subscribing to the
  same topic again later subscribes anew.

  Limit: subscriptions live in this node's relay (`CouncilEx.PubSub.Relay`)
  only. If the relay itself exits and is restarted by the application's
  supervisor, the new relay does not know the subscribers of the old one:
  they get neither the rest of the events nor any notice (the two notices
  above cover the C node going away, not the relay). Subscribers that must
  not wait forever should monitor the relay (`Process.whereis/1` of
  `CouncilEx.PubSub.Relay`) or await the run itself (`CouncilEx.await/2`,
  `CouncilEx.run/3`, which do not depend on the relay for their result).
  While the relay is down, `subscribe/1` and starts with `subscribe: true`
  return `{:error, {:relay_down, reason}}`.

  A sub-council member's nested run publishes on
  `"council_ex:run:" <> parent_id <> ":sub:" <> member_id`; its events carry
  the nested run's own id. Subscribe to that topic (it may be subscribed
  before the parent run starts) to receive them. A sub-council member
  called more than once (in several rounds, or retried) publishes one nested
  run per call on that same topic; that subscription lasts until you
  unsubscribe (or exit), so every nested run is seen.

  Delivery: the C node sends each event once to this node's
  `CouncilEx.PubSub.Relay`, which dispatches it to the local subscribers.
  With `backend: :nif` there is no relay: the core's thread sends each
  event to every subscriber itself, in the same form; a subscriber that
  falls behind gets the overflow notice above, `council_ex_down` never
  comes (there is no node to lose, nor a relay to restart), and a
  subscriber that exits is unsubscribed at once. To receive a run's first
  event, start it with `subscribe: true` (see `CouncilEx.start/3`) instead
  of subscribing after it has started.
  """

  alias CouncilEx.Backend
  alias CouncilEx.PubSub.Relay

  @doc """
  Subscribes the calling process to a run's events. The argument is a run
  id or a topic (`"council_ex:run:" <> run_id`). Returns `:ok`, or
  `{:error, reason}` (`:limit`, `:noconnection`, `{:relay_down, reason}`
  when the relay is not running, e.g. restarting, ...).
  """
  @spec subscribe(binary) :: :ok | {:error, term}
  def subscribe(run_id_or_topic) when is_binary(run_id_or_topic) do
    if Backend.nif?(),
      do: Backend.call({:subscribe, topic(run_id_or_topic), self(), :lib}),
      else: Relay.subscribe(topic(run_id_or_topic), self())
  end

  @doc "Unsubscribes the calling process (run id or topic). Always `:ok`."
  @spec unsubscribe(binary) :: :ok
  def unsubscribe(run_id_or_topic) when is_binary(run_id_or_topic) do
    if Backend.nif?() do
      Backend.call({:unsubscribe, topic(run_id_or_topic), self()})
      :ok
    else
      Relay.unsubscribe(topic(run_id_or_topic), self())
    end
  end

  @doc "The topic of a run: `\"council_ex:run:\" <> run_id` (a topic is returned as is)."
  @spec topic(binary) :: binary
  defdelegate topic(run_id_or_topic), to: CouncilEx.Wire
end
