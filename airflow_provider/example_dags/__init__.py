"""Example DAGs; copy one into your dags folder."""
