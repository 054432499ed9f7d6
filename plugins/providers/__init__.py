"""Built-in cloud providers, one package per cloud, each registered through the provider hook."""
