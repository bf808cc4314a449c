defmodule CouncilEx.Providers do
  @moduledoc """
  Configuration of the model providers (`:openai`, `:openrouter`,
  `:ollama`, `:anthropic`, `:gemini`) and where their API keys come from.

  The C node calls the model APIs itself and reads each key from an
  environment variable of its own process, named by the member option
  `api_key_env` (default: `OPENAI_API_KEY`, `OPENROUTER_API_KEY`,
  `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`; ollama needs none). Keys never
  travel in a spec. There are three ways to give one:

    * a member option `api_key: {:system, "VAR"}`: sent as
      `api_key_env: "VAR"` (a variable of the C node's environment, which
      for a node the library starts is this VM's environment);
    * per-provider defaults in the configuration, merged under each
      member's options when a run starts (the member's own options win):

          config :council_ex,
            providers: [
              openai: [api_key: {:system, "OPENAI_API_KEY"}, temperature: 0.2],
              ollama: [base_url: "http://127.0.0.1:11434"],
              anthropic: [api_key: "sk-ant-..."]
            ]

    * a literal key in that configuration (`api_key: "sk-..."`): when the
      library starts its C node (managed mode) it puts the key into that
      node's OS environment under `key_env_name/1` (e.g.
      `COUNCIL_EX_KEY_ANTHROPIC`), and the provider's members get
      `api_key_env` with that name. The key itself goes nowhere else: not
      in specs, requests, the node manager's state, logs or errors. Keys
      are read when the node starts: after changing them, restart the node
      (e.g. restart the application). An external node (`config
      :council_ex, node: ...`) cannot receive a key this way: a run of
      such a provider is refused with `{:error, {:provider_config,
      provider, message}}`; set the key in that node's environment and use
      `api_key: {:system, "VAR"}`.

  A literal key in a member's own options is refused by
  `CouncilEx.Spec.new/1` (field `members[i].options.api_key`).

      iex> CouncilEx.Providers.key_env_name(:openai)
      "COUNCIL_EX_KEY_OPENAI"
  """

  alias CouncilEx.Spec

  @doc "The generated environment variable that carries a configured literal key of `provider`."
  @spec key_env_name(atom) :: binary
  def key_env_name(provider) when is_atom(provider),
    do: "COUNCIL_EX_KEY_" <> String.upcase(Atom.to_string(provider))

  @doc """
  The spec with the configured defaults of each model member's provider
  merged under its options (the member's own options win), API keys
  resolved as described above and the result checked again
  (`CouncilEx.Spec.check/1`), then every model member checked for a
  `model` (from its options or the defaults), with the C node's field
  path.

  Options (for tests): `:config` (default: `config :council_ex,
  :providers`), `:external` (default: whether `config :council_ex, :node`
  is set).

  Returns `{:ok, spec}`, `{:error, {:invalid_spec, field, message}}` or
  `{:error, {:provider_config, provider, message}}`. Raises
  `ArgumentError` for a malformed `:providers` configuration.
  """
  @spec resolve(Spec.t(), keyword) ::
          {:ok, Spec.t()}
          | {:error, {:invalid_spec, binary, binary} | {:provider_config, atom, binary}}
  def resolve(%Spec{} = spec, opts \\ []) do
    config = config!(Keyword.get_lazy(opts, :config, &configured/0))
    external = Keyword.get_lazy(opts, :external, &external?/0)
    models = Spec.model_providers()

    with {:ok, members} <- merge_defaults(spec.members, models, config, external),
         {:ok, spec} <- recheck(spec, members) do
      check_models(spec, models)
    end
  end

  @doc false
  # The OS environment of a C node the library starts: each configured
  # literal key under its key_env_name/1, as the port's `env` option wants
  # it. Called only when the node is spawned; the result must not be kept.
  # A key that cannot be an environment value (not UTF-8, or holding a
  # NUL byte) is left out: its members then fail with the C node's error
  # naming the variable.
  @spec node_env() :: [{charlist, charlist}]
  def node_env do
    for {provider, opts} <- config!(configured()),
        key = Map.get(opts, "api_key"),
        is_binary(key) and key != "" and String.valid?(key) and
          not String.contains?(key, <<0>>),
        do: {String.to_charlist(key_env_name(provider)), String.to_charlist(key)}
  end

  # ------------------------------------------------------------- internals

  defp configured, do: Application.get_env(:council_ex, :providers, [])
  defp external?, do: Application.get_env(:council_ex, :node) != nil

  # provider atom => options map with binary keys (api_key kept as given).
  defp config!(config) when is_list(config) or is_map(config) do
    models = Spec.model_providers()

    Map.new(config, fn
      {provider, opts} when is_atom(provider) or is_binary(provider) ->
        p = Enum.find(models, &(&1 == provider or Atom.to_string(&1) == provider))

        unless p do
          raise ArgumentError,
                "config :council_ex, :providers: unknown provider #{inspect(provider)} " <>
                  "(expected one of #{inspect(models)})"
        end

        {p, options!(p, opts)}

      other ->
        raise ArgumentError,
              "config :council_ex, :providers: expected {provider, options} entries, got: " <>
                inspect_entry(other)
    end)
  end

  defp config!(other),
    do:
      raise(
        ArgumentError,
        "config :council_ex, :providers must be a keyword list, got: #{inspect_entry(other)}"
      )

  defp options!(provider, opts) when is_list(opts) or is_map(opts) do
    if is_list(opts) and not Keyword.keyword?(opts) do
      raise ArgumentError,
            "config :council_ex, :providers, #{provider}: expected a keyword list of options"
    end

    Map.new(opts, fn {k, v} -> {to_string(k), v} end)
  end

  defp options!(provider, _other),
    do:
      raise(
        ArgumentError,
        "config :council_ex, :providers, #{provider}: expected a keyword list of options"
      )

  # Never shows a key: only the shape of what was given.
  defp inspect_entry({k, _v}), do: "{#{inspect(k)}, ...}"
  defp inspect_entry(other) when is_binary(other), do: "a binary"
  defp inspect_entry(other), do: inspect(other, limit: 5, printable_limit: 20)

  defp merge_defaults(members, models, config, external) do
    Enum.reduce_while(members, {:ok, []}, fn m, {:ok, acc} ->
      case defaults(m, models, config, external) do
        {:ok, nil} -> {:cont, {:ok, [m | acc]}}
        {:ok, d} -> {:cont, {:ok, [%{m | options: Map.merge(d, m.options)} | acc]}}
        error -> {:halt, error}
      end
    end)
    |> case do
      {:ok, members} -> {:ok, Enum.reverse(members)}
      error -> error
    end
  end

  # The defaults of a model member's provider, with the key resolved; nil
  # when there are none (or the member is not a model member).
  defp defaults(%Spec.Member{provider: p}, models, config, external) do
    case {p in models, Map.get(config, p)} do
      {true, opts} when is_map(opts) and opts != %{} -> key_default(p, opts, external)
      _ -> {:ok, nil}
    end
  end

  defp key_default(p, opts, external) do
    case Map.pop(opts, "api_key") do
      {nil, rest} ->
        {:ok, rest}

      {{:system, var}, rest} when is_binary(var) and var != "" ->
        {:ok, Map.put(rest, "api_key_env", var)}

      {key, rest} when is_binary(key) and key != "" ->
        if external do
          {:error,
           {:provider_config, p,
            "a literal api_key in config :council_ex, :providers cannot reach an external " <>
              "C node (config :council_ex, :node): set the key in that node's environment " <>
              "and use api_key: {:system, \"VAR\"}"}}
        else
          {:ok, Map.put(rest, "api_key_env", key_env_name(p))}
        end

      {_other, _rest} ->
        {:error,
         {:provider_config, p,
          "api_key in config :council_ex, :providers must be {:system, \"VAR\"} or the key " <>
            "as a non-empty binary"}}
    end
  end

  defp recheck(spec, members) do
    if members == spec.members, do: {:ok, spec}, else: Spec.check(%{spec | members: members})
  end

  defp check_models(spec, models) do
    spec.members
    |> Enum.with_index()
    |> Enum.find(fn {m, _i} ->
      m.provider in models and not valid_model?(Map.get(m.options, "model"))
    end)
    |> case do
      nil ->
        {:ok, spec}

      {_m, i} ->
        {:error,
         {:invalid_spec, "members[#{i}].options.model",
          "is required: the model's name (a non-empty string)"}}
    end
  end

  defp valid_model?(model), do: is_binary(model) and model != ""
end
